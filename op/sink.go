package op

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
)

// Sink returns a node that consumes x and computes nothing: its value is a float32 zero on
// the host, whatever x is and wherever x lives. Use it to give a node that nothing else reads
// (an MoE layer's int32 Counts) a consumer: gorgonia's lisp machine takes every node without
// one for a cost and gives it a unit gradient, which fails for integer values ("Unhandled
// dtype: int32"), even in forward-only mode.
//
// Sink keeps no copy of x, unlike G.Read: on every run after the first, the tape machine's
// read copies into the value it read the run before, and on the GPU that value is step memory
// (device.Engine.EndStep) that later values may use by then. Read x's value with x.Value()
// after a run instead.
func Sink(x *G.Node) (*G.Node, error) {
	const name = "Sink"
	if err := checkNodes(name, []*G.Node{x}, "x"); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, sinkOp{}, x)
}

// sinkOp: x → float32 0.
type sinkOp struct{ opkit.Base }

func (sinkOp) Arity() int { return 1 }

// Type: a → float32.
func (sinkOp) Type() hm.Type { return hm.NewFnType(hm.TypeVariable('a'), tensor.Float32) }

func (sinkOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 1 {
		return nil, opkit.Errorf("Sink", "got %d input shapes, want 1", len(ds))
	}
	return tensor.ScalarShape(), nil
}

func (sinkOp) Do(vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity("Sink", vs, 1); err != nil {
		return nil, err
	}
	return G.NewF32(0), nil
}

// DiffWRT: Sink is not differentiable in x. (An op without DiffWRT would make G.Grad stop
// with "unable to differentiate … would leave a portion of the graph unreachable".)
func (sinkOp) DiffWRT(int) []bool { return []bool{false} }

// SymDiff is never called: nothing is differentiable.
func (sinkOp) SymDiff(G.Nodes, *G.Node, *G.Node) (G.Nodes, error) {
	return nil, opkit.Errorf("Sink", "has no gradient")
}

func (op sinkOp) String() string        { return "op.Sink" }
func (op sinkOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op sinkOp) Hashcode() uint32      { return opkit.Hashcode(op) }
