package ep

import (
	"errors"
	"fmt"
	"hash"
	"runtime/debug"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
)

// Guard builds the node that build makes from the nodes in, with an op that aborts c whenever
// it fails (an error or a panic of its Do or DoDiff), so that the other ranks, waiting in the
// next collective, return an error instead of waiting for this rank. Use it for the ops of an
// expert-parallel step that can fail on values before or between the collectives (a top-k
// that meets a NaN score, a plan built from bad expert ids): ep.NewPlan guards its send plan,
// Dispatch its permute and Combine its unpermute, and moe.NewExpertParallel's layer its top-k
// and plan. The gradient nodes that build's op makes (its SymDiff, on the tape machine) are
// not guarded; its DoDiff (the lisp machine) is.
//
// build must make exactly one op node whose inputs are its arguments, in order (op.TopK,
// op.NewPlan, ...); Guard runs it once on stand-ins of in, in a scratch graph, to obtain the
// op, and applies the guarded op to in. The node is differentiable as build's is (the guard
// forwards DiffWRT, SymDiff and DoDiff).
func Guard(c Communicator, build func(in ...*G.Node) (*G.Node, error), in ...*G.Node) (*G.Node, error) {
	const name = "ep.Guard"
	if err := CheckCommunicator(c); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if build == nil {
		return nil, opkit.Errorf(name, "build is nil")
	}
	if len(in) == 0 {
		return nil, opkit.Errorf(name, "no input nodes")
	}
	for i, n := range in {
		if n == nil {
			return nil, opkit.Errorf(name, "input %d is nil", i)
		}
		if n.Graph() != in[0].Graph() {
			return nil, opkit.Errorf(name, "input %d belongs to another graph than input 0", i)
		}
	}
	scratch := G.NewGraph()
	stand := make([]*G.Node, len(in))
	for i, n := range in {
		dt, err := opkit.NodeDtype(name, fmt.Sprintf("input %d", i), n)
		if err != nil {
			return nil, err
		}
		s := n.Shape()
		if len(s) == 0 {
			stand[i] = G.NewScalar(scratch, dt, G.WithName(fmt.Sprintf("in%d", i)))
		} else {
			stand[i] = G.NewTensor(scratch, dt, len(s), G.WithShape(s...), G.WithName(fmt.Sprintf("in%d", i)))
		}
	}
	out, err := build(stand...)
	if err != nil {
		return nil, err
	}
	if out == nil || out.Op() == nil {
		return nil, opkit.Errorf(name, "build made no op node")
	}
	if out.Graph() != scratch || scratch.From(out.ID()) == nil {
		return nil, opkit.Errorf(name, "build made a node outside the graph of its arguments; it must apply one op to them, not to nodes it holds")
	}
	kids := G.Nodes{}
	for it := scratch.From(out.ID()); it.Next(); {
		kids = append(kids, it.Node().(*G.Node))
	}
	if len(kids) != len(in) {
		return nil, opkit.Errorf(name, "build made a node of %d inputs from %d; it must apply one op to its arguments", len(kids), len(in))
	}
	for i := range kids {
		if kids[i] != stand[i] {
			return nil, opkit.Errorf(name, "build's node does not take its arguments in order; it must apply one op to them")
		}
	}
	g := guardOp{op: out.Op(), c: c}
	if _, ok := g.op.(G.UsePreallocDoer); ok { // keep Gorgonia's preallocation of the output
		return opkit.ApplyOp(name, guardPreallocOp{g}, in...)
	}
	return opkit.ApplyOp(name, g, in...)
}

// guardPreallocOp is guardOp for an op that writes into a preallocated output.
type guardPreallocOp struct{ guardOp }

var _ G.UsePreallocDoer = guardPreallocOp{}

// UsePreallocDo runs the op's UsePreallocDo; an error or panic aborts the communicator.
func (o guardPreallocOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (v G.Value, err error) {
	err = o.call(func() (e error) { v, e = o.op.(G.UsePreallocDoer).UsePreallocDo(prealloc, vs...); return e })
	return v, err
}

// guardOp runs op and aborts c when it fails.
type guardOp struct {
	op G.Op
	c  Communicator
}

var (
	_ G.Op   = guardOp{}
	_ G.SDOp = guardOp{}
	_ G.ADOp = guardOp{}
)

// fail aborts the communicator with err and returns it.
func (o guardOp) fail(err error) error {
	err = opkit.Wrap(fmt.Sprintf("ep: rank %d", o.c.Rank()), err)
	o.c.Abort(err)
	return err
}

// call runs f, turning a panic into an error, and aborts on any error.
func (o guardOp) call(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = o.fail(fmt.Errorf("%v panicked: %v\n%s", o.op, r, debug.Stack()))
		}
	}()
	if err = f(); err != nil && !errors.Is(err, ErrAborted) {
		return o.fail(err)
	}
	return err
}

func (o guardOp) Arity() int                                        { return o.op.Arity() }
func (o guardOp) Type() hm.Type                                     { return o.op.Type() }
func (o guardOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) { return o.op.InferShape(ds...) }
func (o guardOp) ReturnsPtr() bool                                  { return o.op.ReturnsPtr() }
func (o guardOp) CallsExtern() bool                                 { return o.op.CallsExtern() }
func (o guardOp) OverwritesInput() int                              { return o.op.OverwritesInput() }
func (o guardOp) String() string                                    { return "ep.Guard{" + commKey(o.c) + "; " + o.op.String() + "}" }
func (o guardOp) WriteHash(h hash.Hash) {
	fmt.Fprintf(h, "ep.Guard(%s)", commKey(o.c))
	o.op.WriteHash(h)
}
func (o guardOp) Hashcode() uint32 {
	return opkit.Hash(fmt.Sprintf("%s %d %s", commKey(o.c), o.op.Hashcode(), o.op))
}

// Do runs the op; an error or panic aborts the communicator.
func (o guardOp) Do(vs ...G.Value) (v G.Value, err error) {
	err = o.call(func() (e error) { v, e = o.op.Do(vs...); return e })
	return v, err
}

// DiffWRT is the op's (all false if it has no symbolic derivative).
func (o guardOp) DiffWRT(n int) []bool {
	if sd, ok := o.op.(G.SDOp); ok {
		return sd.DiffWRT(n)
	}
	return make([]bool, n)
}

// SymDiff is the op's (no gradient if it has none).
func (o guardOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if sd, ok := o.op.(G.SDOp); ok {
		return sd.SymDiff(inputs, output, grad)
	}
	return make(G.Nodes, len(inputs)), nil
}

// DoDiff is the op's; an error or panic aborts the communicator.
func (o guardOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	ad, ok := o.op.(G.ADOp)
	if !ok {
		return nil
	}
	return o.call(func() error { return ad.DoDiff(ctx, inputs, output) })
}
