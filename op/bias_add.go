package op

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// BiasAdd returns y = x + b with the vector b [D] added to every row of the matrix x [N,D]
// (the bias of an affine layer). Unlike G.BroadcastAdd it never materialises the repeated
// bias, and it runs on the device when x and b live there.
//
// Gradients: dx = dy, db = Σ_rows dy (column sums in float64, row order). CPU kernels:
// kernels.BiasAdd and kernels.ColSum; on the device their CUDA twins.
func BiasAdd(x, b *G.Node) (*G.Node, error) {
	const name = "BiasAdd"
	if err := checkNodes(name, []*G.Node{x, b}, "x", "b"); err != nil {
		return nil, err
	}
	if err := wantFloat(x.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "x: %v", err)
	}
	if b.Dtype() != x.Dtype() {
		return nil, opkit.Errorf(name, "b has dtype %v, x %v", b.Dtype(), x.Dtype())
	}
	if err := checkShape(name, "x", x.Shape(), dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "b", b.Shape(), dim{"D", x.Shape()[1]}); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, biasAddOp{}, x, b)
}

// biasAddOp: x [N,D], b [D] → x + b [N,D].
type biasAddOp struct{ opkit.Base }

func (op biasAddOp) Arity() int { return 2 }

func (op biasAddOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a}, G.TensorType{Dims: 2, Of: a})
}

func (op biasAddOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "BiasAdd"
	s, err := shapesOf(name, ds, "x", "b")
	if err != nil {
		return nil, err
	}
	if err := checkShape(name, "x", s[0], dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "b", s[1], dim{"D", s[0][1]}); err != nil {
		return nil, err
	}
	return s[0].Clone(), nil
}

func (op biasAddOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "BiasAdd"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	x, b := vs[0], vs[1]
	if err := checkValue(name, "x", x, tensor.Dtype{}, dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "b", b, x.Dtype(), dim{"D", x.Shape()[1]}); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, x, b)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.BiasAdd(x, b)
		return v, opkit.Wrap(name, err)
	}
	if x.Dtype() == tensor.Float32 {
		return biasAddHost[float32](x, b)
	}
	return biasAddHost[float64](x, b)
}

func biasAddHost[F float32 | float64](x, b G.Value) (G.Value, error) {
	const name = "BiasAdd"
	xs, err := hostFloats[F](name, "x", x)
	if err != nil {
		return nil, err
	}
	bs, err := hostFloats[F](name, "b", b)
	if err != nil {
		return nil, err
	}
	out, o := newDense[F](x.Shape().Clone()...)
	return out, opkit.Wrap(name, kernels.BiasAdd(o, xs, bs))
}

func (op biasAddOp) String() string        { return "op.BiasAdd{}" }
func (op biasAddOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op biasAddOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op biasAddOp) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: dx = dy (the gradient node itself, as Gorgonia's Add does), db = ColSum(dy).
func (op biasAddOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("BiasAdd", "want 2 inputs, got %d", len(inputs))
	}
	db, err := G.ApplyOp(colSumOp{}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{grad, db}, nil
}

// DoDiff accumulates dy into x's gradient and its column sums into b's.
func (op biasAddOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "BiasAdd.DoDiff"
	if len(inputs) != 2 {
		return opkit.Errorf(name, "want 2 inputs, got %d", len(inputs))
	}
	dy, err := output.Grad()
	if err != nil {
		return err
	}
	db, err := colSumOp{}.Do(dy)
	if err != nil {
		return err
	}
	gx, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gb, err := inputs[1].Grad()
	if err != nil {
		return err
	}
	return accumulate(name, gradUpdate{"x", gx, dy}, gradUpdate{"b", gb, db})
}

// colSumOp: x [N,D] → Σ_rows x [D] (the bias gradient).
type colSumOp struct{ opkit.Base }

func (op colSumOp) Arity() int { return 1 }

func (op colSumOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a})
}

func (op colSumOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("ColSum", ds, "x")
	if err != nil {
		return nil, err
	}
	if err := checkShape("ColSum", "x", s[0], dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	return tensor.Shape{s[0][1]}, nil
}

func (op colSumOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ColSum"
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	x := vs[0]
	if err := checkValue(name, "x", x, tensor.Dtype{}, dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, x)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.ColSum(x)
		return v, opkit.Wrap(name, err)
	}
	if x.Dtype() == tensor.Float32 {
		return colSumHost[float32](x)
	}
	return colSumHost[float64](x)
}

func colSumHost[F float32 | float64](x G.Value) (G.Value, error) {
	xs, err := hostFloats[F]("ColSum", "x", x)
	if err != nil {
		return nil, err
	}
	out, o := newDense[F](x.Shape()[1])
	return out, opkit.Wrap("ColSum", kernels.ColSum(o, xs))
}

func (op colSumOp) String() string        { return "op.ColSum{}" }
func (op colSumOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op colSumOp) Hashcode() uint32      { return opkit.Hashcode(op) }
