package ep

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/op"
)

// Combine sends the expert outputs yr [R',H] (layout of p.Local(), as Dispatch returned it) back
// to the ranks their tokens came from and combines them into y [T,H] with the router weights
// fused:
//
//	y[t] = Σ_k probs[t,k] · yr[row of (t,k)]
//
// (probs nil: the unweighted sum). It is the reverse exchange followed by op.Unpermute with the
// send plan, so the sum runs over the slots in k order with op.Unpermute's rounding, and
// y equals the single-rank op.Unpermute bit for bit. Its gradients are the dispatch exchange of
// probs[t,k]·dy[t] to yr, and ⟨yr[row], dy[t]⟩ to probs.
//
// Combine is a collective: every rank must run it, in the same order relative to the other
// collectives.
func Combine(yr, probs *G.Node, p *Plan) (*G.Node, error) {
	const name = combineName
	ys, err := CombineRows(yr, p)
	if err != nil {
		return nil, err
	}
	// Guarded: an unpermute (or its gradient, which runs before the backward exchange) that
	// fails on this rank aborts the communicator, so the other ranks do not wait for it.
	// (op.Unpermute's node takes yp, probs if any, then the plan.)
	in := []*G.Node{ys}
	if probs != nil {
		in = append(in, probs)
	}
	in = append(in, p.Send.Node)
	y, err := Guard(p.Comm, func(in ...*G.Node) (*G.Node, error) {
		var pr *G.Node
		if len(in) > 2 {
			pr = in[1]
		}
		return op.Unpermute(in[0], pr, &op.Plan{Node: in[len(in)-1], Geometry: p.Send.Geometry})
	}, in...)
	return y, opkit.Wrap(name, err)
}

// CombineRows is the exchange half of Combine: yr [R',H] in the layout of p.Local() -> ys
// [Rs,H] in the send layout of p.Send (rows that held no token are zero); op.Unpermute with
// p.Send then combines them.
func CombineRows(yr *G.Node, p *Plan) (*G.Node, error) {
	const name = combineName
	if err := p.check(name); err != nil {
		return nil, err
	}
	if err := checkRowsNode(name, "yr", yr, p.LocalGeometry.Rows()); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, combineOp{exchange: exchange{gs: p.Send.Geometry, gl: p.LocalGeometry, c: p.Comm}}, yr, p.Node)
}

// combineOp is the exchange of Combine: (yr [R',H], ep plan) -> ys [Rs,H].
type combineOp struct {
	opkit.Base
	exchange
}

var (
	_ G.Op   = combineOp{}
	_ G.SDOp = combineOp{}
	_ G.ADOp = combineOp{}
)

func (o combineOp) Arity() int            { return 2 }
func (o combineOp) Type() hm.Type         { return exchangeType() }
func (o combineOp) String() string        { return o.key(combineName) }
func (o combineOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, o) }
func (o combineOp) Hashcode() uint32      { return opkit.Hashcode(o) }

func (o combineOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return o.inferShape(combineName, false, ds)
}

// Do is a collective: the reverse exchange.
func (o combineOp) Do(vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(combineName, vs, 2); err != nil {
		o.c.Abort(err)
		return nil, err
	}
	return o.run(combineName, false, vs[0], vs[1])
}

// DiffWRT: the rows yes, the plan no.
func (o combineOp) DiffWRT(n int) []bool { return []bool{true, false} }

// SymDiff builds the forward (dispatch) exchange of the gradient.
func (o combineOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(combineName, "SymDiff got %d inputs, want 2", len(inputs))
	}
	d, err := opkit.ApplyOp(dispatchName, dispatchOp(o), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff is a collective: it adds the dispatch exchange of the output's gradient into yr's.
func (o combineOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return o.diff(combineName, false, inputs, output)
}
