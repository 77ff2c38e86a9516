package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// RowLogSumExp returns lse [T] with lse[t] = log Σ_e exp(x[t,e]) for x [T,E], computed
// stably (the row maximum is subtracted first, in float64). Its gradient is
// dx[t,e] = softmax(x[t])_e · dlse[t]. (gorgonia's LogSumExp adds the maximum inside the
// logarithm, so it does not compute this function.)
func RowLogSumExp(x *G.Node) (*G.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("gomoe: RowLogSumExp: x is nil")
	}
	if err := wantFloat(x.Dtype()); err != nil {
		return nil, fmt.Errorf("gomoe: RowLogSumExp: %v", err)
	}
	if s := x.Shape(); s.Dims() != 2 || s[0] < 1 || s[1] < 1 {
		return nil, fmt.Errorf("gomoe: RowLogSumExp: x has shape %v, want (T, E) with T, E >= 1", s)
	}
	return opkit.ApplyOp("RowLogSumExp", lseOp{}, x)
}

type lseOp struct{ opkit.Base }

func (op lseOp) Arity() int { return 1 }

// Type: Matrix a → Vector a.
func (op lseOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a})
}

func (op lseOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 1 {
		return nil, fmt.Errorf("gomoe: RowLogSumExp: want 1 input, got %d", len(ds))
	}
	s, ok := ds[0].(tensor.Shape)
	if !ok || s.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: RowLogSumExp: x has shape %v, want (T, E)", ds[0])
	}
	return tensor.Shape{s[0]}, nil
}

func (op lseOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RowLogSumExp"
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	x, err := gmmDense(name, "x", vs[0], tensor.Dtype{}, nil)
	if err != nil {
		return nil, err
	}
	if x.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: %s: x has shape %v, want (T, E)", name, x.Shape())
	}
	T, E := x.Shape()[0], x.Shape()[1]
	out := tensor.New(tensor.Of(x.Dtype()), tensor.WithShape(T))
	switch x.Dtype() {
	case tensor.Float32:
		err = kernels.RowLogSumExp(out.Float32s(), x.Float32s(), E)
	case tensor.Float64:
		err = kernels.RowLogSumExp(out.Float64s(), x.Float64s(), E)
	default:
		return nil, checkFloat(name, "x", x.Dtype())
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (op lseOp) String() string        { return "op.RowLogSumExp{}" }
func (op lseOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op lseOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op lseOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff: dx = softmax(x) · dlse, computed as exp(x - lse) · dlse.
func (op lseOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, fmt.Errorf("gomoe: RowLogSumExp: want 1 input, got %d", len(inputs))
	}
	dx, err := G.ApplyOp(lseGradOp{}, inputs[0], output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

// lseDoBack validates x [T,E], lse [T], g [T] and adds the gradient into dx [T,E].
func lseDoBack(name string, dx *tensor.Dense, xv, lv, gv G.Value) error {
	x, err := gmmDense(name, "x", xv, dx.Dtype(), dx.Shape())
	if err != nil {
		return err
	}
	T, E := x.Shape()[0], x.Shape()[1]
	l, err := gmmDense(name, "lse", lv, dx.Dtype(), tensor.Shape{T})
	if err != nil {
		return err
	}
	g, err := gmmDense(name, "grad", gv, dx.Dtype(), tensor.Shape{T})
	if err != nil {
		return err
	}
	switch dx.Dtype() {
	case tensor.Float32:
		return kernels.RowLogSumExpBackward(dx.Float32s(), x.Float32s(), l.Float32s(), g.Float32s(), E)
	case tensor.Float64:
		return kernels.RowLogSumExpBackward(dx.Float64s(), x.Float64s(), l.Float64s(), g.Float64s(), E)
	}
	return checkFloat(name, "x", dx.Dtype())
}

// DoDiff accumulates softmax(x) · dlse into x's gradient.
func (op lseOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "RowLogSumExp.DoDiff"
	if len(inputs) != 1 {
		return fmt.Errorf("gomoe: %s: want 1 input, got %d", name, len(inputs))
	}
	gxv, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gov, err := output.Grad()
	if err != nil {
		return err
	}
	gx, ok := gxv.(*tensor.Dense)
	if !ok || gx.RequiresIterator() || gx.Dims() != 2 {
		return fmt.Errorf("gomoe: %s: x gradient is %T, want a contiguous dense matrix", name, gxv)
	}
	return lseDoBack(name, gx, inputs[0].Value(), output.Value(), gov)
}

// lseGradOp: x [T,E], lse [T], dlse [T] → dx [T,E].
type lseGradOp struct{ opkit.Base }

func (op lseGradOp) Arity() int { return 3 }
func (op lseGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a}, G.TensorType{Dims: 1, Of: a}, G.TensorType{Dims: 2, Of: a})
}

func (op lseGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 3 {
		return nil, fmt.Errorf("gomoe: RowLogSumExpGrad: want 3 inputs, got %d", len(ds))
	}
	s, ok := ds[0].(tensor.Shape)
	if !ok || s.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: RowLogSumExpGrad: x has shape %v, want (T, E)", ds[0])
	}
	return s.Clone(), nil
}

func (op lseGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RowLogSumExpGrad"
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, err
	}
	x, err := gmmDense(name, "x", vs[0], tensor.Dtype{}, nil)
	if err != nil {
		return nil, err
	}
	if err := checkFloat(name, "x", x.Dtype()); err != nil {
		return nil, err
	}
	if x.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: %s: x has shape %v, want (T, E)", name, x.Shape())
	}
	dx := tensor.New(tensor.Of(x.Dtype()), tensor.WithShape(x.Shape().Clone()...))
	if err := lseDoBack(name, dx, x, vs[1], vs[2]); err != nil {
		return nil, err
	}
	return dx, nil
}

func (op lseGradOp) String() string        { return "op.RowLogSumExpGrad{}" }
func (op lseGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op lseGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = lseOp{}
	_ G.ADOp = lseOp{}
)
