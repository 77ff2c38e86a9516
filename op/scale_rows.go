package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// ScaleRows returns y [R,F] with y[r,c] = x[r,c]·s[r]: every row of x scaled by its own
// factor (the router prob of the row's token on the activation, Config.ProbsOnActivation).
// x is float32, float64 or bfloat16; s has x's dtype, float32 for bfloat16 x. Unlike
// G.BroadcastHadamardProd it never materialises the repeated factors, and it runs on the
// device.
//
// Gradients: dx = ScaleRows(dy, s); ds[r] = Σ_c dy[r,c]·x[r,c] (summed in float64 in column
// order on the CPU, in the accumulator type by one warp per row on the GPU). CPU kernels:
// kernels.ScaleRows and kernels.RowDot; on the device their CUDA twins.
func ScaleRows(x, s *G.Node) (*G.Node, error) {
	const name = "ScaleRows"
	if err := checkNodes(name, []*G.Node{x, s}, "x", "s"); err != nil {
		return nil, err
	}
	if !isData(x.Dtype()) {
		return nil, opkit.Errorf(name, "x has dtype %v, want float32, float64 or bfloat16", x.Dtype())
	}
	if err := checkProbsDtype(name, x.Dtype(), s.Dtype()); err != nil {
		return nil, err
	}
	if err := checkShape(name, "x", x.Shape(), dim{"R", -1}, dim{"F", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "s", s.Shape(), dim{"R", x.Shape()[0]}); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, scaleRowsOp{}, x, s)
}

// scaleRowsOp: x [R,F], s [R] → x·s per row.
type scaleRowsOp struct{ opkit.Base }

func (op scaleRowsOp) Arity() int { return 2 }

func (op scaleRowsOp) Type() hm.Type {
	a, p := hm.TypeVariable('a'), hm.TypeVariable('p')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: p}, G.TensorType{Dims: 2, Of: a})
}

func (op scaleRowsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 2 {
		return nil, opkit.Errorf("ScaleRows", "want 2 inputs, got %d", len(ds))
	}
	x, err := shapeOf("ScaleRows", "x", ds[0])
	if err != nil {
		return nil, err
	}
	s, err := shapeOf("ScaleRows", "s", ds[1])
	if err != nil {
		return nil, err
	}
	if x.Dims() != 2 || s.Dims() != 1 || s[0] != x[0] {
		return nil, opkit.Errorf("ScaleRows", "x %v and s %v, want (R, F) and (R)", x, s)
	}
	return x.Clone(), nil
}

// rowsArgs checks a [R,F] data value and a [R] probs-typed value.
func rowsArgs(name string, x, s G.Value) error {
	if x == nil || s == nil {
		return opkit.Errorf(name, "nil input")
	}
	if !isData(x.Dtype()) {
		return opkit.Errorf(name, "x has dtype %v", x.Dtype())
	}
	if err := checkProbsDtype(name, x.Dtype(), s.Dtype()); err != nil {
		return err
	}
	xs, ss := x.Shape(), s.Shape()
	if xs.Dims() != 2 || ss.Dims() != 1 || ss[0] != xs[0] {
		return opkit.Errorf(name, "x %v and s %v, want (R, F) and (R)", xs, ss)
	}
	return nil
}

func (op scaleRowsOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ScaleRows"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if err := rowsArgs(name, vs[0], vs[1]); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.ScaleRows(vs[0], vs[1])
		return v, opkit.Wrap(name, err)
	}
	cols := vs[0].Shape()[1]
	switch vs[0].Dtype() {
	case tensor.Float64:
		return scaleRowsHost[float64](name, vs[0], vs[1], cols)
	case tensor.Float32:
		return scaleRowsHost[float32](name, vs[0], vs[1], cols)
	}
	w, err := widenBF16(name, "x", vs[0])
	if err != nil {
		return nil, err
	}
	y, err := scaleRowsHost[float32](name, w, vs[1], cols)
	if err != nil {
		return nil, err
	}
	return roundBF16(name, y, nil)
}

func scaleRowsHost[F float32 | float64](name string, xv, sv G.Value, cols int) (G.Value, error) {
	x, err := hostFloats[F](name, "x", xv)
	if err != nil {
		return nil, err
	}
	s, err := hostFloats[F](name, "s", sv)
	if err != nil {
		return nil, err
	}
	out, y := newDense[F](xv.Shape().Clone()...)
	if err := kernels.ScaleRows(y, x, s, cols); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op scaleRowsOp) String() string        { return "op.ScaleRows{}" }
func (op scaleRowsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op scaleRowsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op scaleRowsOp) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: dx = ScaleRows(dy, s), ds = RowDot(dy, x).
func (op scaleRowsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("ScaleRows", "want 2 inputs, got %d", len(inputs))
	}
	dx, err := G.ApplyOp(op, grad, inputs[1])
	if err != nil {
		return nil, err
	}
	ds, err := G.ApplyOp(rowDotOp{out: probsDtypeFor(inputs[0].Dtype())}, grad, inputs[0])
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, ds}, nil
}

// DoDiff accumulates both gradients.
func (op scaleRowsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "ScaleRows.DoDiff"
	if len(inputs) != 2 {
		return opkit.Errorf(name, "want 2 inputs, got %d", len(inputs))
	}
	gy, err := output.Grad()
	if err != nil {
		return err
	}
	dx, err := op.Do(gy, inputs[1].Value())
	if err != nil {
		return err
	}
	ds, err := rowDotOp{out: probsDtypeFor(inputs[0].Dtype())}.Do(gy, inputs[0].Value())
	if err != nil {
		return err
	}
	gx, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gs, err := inputs[1].Grad()
	if err != nil {
		return err
	}
	return accumulate(name, gradUpdate{"x", gx, dx}, gradUpdate{"s", gs, ds})
}

// rowDotOp: a [R,F], b [R,F] → [R] row sums of a·b, of dtype out (the probs dtype).
type rowDotOp struct {
	opkit.Base
	out tensor.Dtype
}

func (op rowDotOp) Arity() int { return 2 }

func (op rowDotOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: op.out})
}

func (op rowDotOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 2 {
		return nil, opkit.Errorf("RowDot", "want 2 inputs, got %d", len(ds))
	}
	s, err := sameShapes("RowDot", 2, ds)
	if err != nil {
		return nil, err
	}
	return tensor.Shape{s[0]}, nil
}

func (op rowDotOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RowDot"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if vs[0].Dtype() != vs[1].Dtype() || !vs[0].Shape().Eq(vs[1].Shape()) || vs[0].Shape().Dims() != 2 {
		return nil, opkit.Errorf(name, "inputs %v %v and %v %v, want two matrices of one dtype and shape", vs[0].Dtype(), vs[0].Shape(), vs[1].Dtype(), vs[1].Shape())
	}
	if probsDtypeFor(vs[0].Dtype()) != op.out {
		return nil, opkit.Errorf(name, "inputs of dtype %v for a %v result", vs[0].Dtype(), op.out)
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.RowDot(vs[0], vs[1])
		return v, opkit.Wrap(name, err)
	}
	a, b := vs[0], vs[1]
	if a.Dtype() == bfloat16.Dtype {
		if a, err = widenBF16(name, "a", a); err != nil {
			return nil, err
		}
		if b, err = widenBF16(name, "b", b); err != nil {
			return nil, err
		}
	}
	cols := a.Shape()[1]
	if op.out == tensor.Float64 {
		return rowDotHost[float64](name, a, b, cols)
	}
	return rowDotHost[float32](name, a, b, cols)
}

func rowDotHost[F float32 | float64](name string, av, bv G.Value, cols int) (G.Value, error) {
	a, err := hostFloats[F](name, "a", av)
	if err != nil {
		return nil, err
	}
	b, err := hostFloats[F](name, "b", bv)
	if err != nil {
		return nil, err
	}
	out, o := newDense[F](av.Shape()[0])
	if err := kernels.RowDot(o, a, b, cols); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op rowDotOp) String() string        { return fmt.Sprintf("op.RowDot{out=%v}", op.out) }
func (op rowDotOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op rowDotOp) Hashcode() uint32      { return opkit.Hashcode(op) }
