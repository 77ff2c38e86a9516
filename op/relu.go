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

// ReLU returns max(x, 0) element-wise for a float tensor x (a NaN stays NaN). It runs on the
// device when x lives there (Gorgonia's Rectify goes through ops a device engine may lack).
//
// Gradient: dx = dy where x > 0, else 0. CPU kernels: kernels.ReLU and kernels.ReLUBackward;
// on the device their CUDA twins.
func ReLU(x *G.Node) (*G.Node, error) {
	const name = "ReLU"
	if x == nil {
		return nil, opkit.Errorf(name, "x is nil")
	}
	if err := wantFloat(x.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "x: %v", err)
	}
	if x.IsScalar() {
		return nil, opkit.Errorf(name, "x is a scalar, want a tensor of at least one dimension (reshape it to (1))")
	}
	if x.Shape().TotalSize() == 0 {
		return nil, opkit.Errorf(name, "x has shape %v, want a non-empty tensor", opkit.ShapeString(x.Shape()))
	}
	return opkit.ApplyOp(name, reluOp{dims: x.Dims()}, x)
}

// reluOp: x → max(x, 0).
type reluOp struct {
	opkit.Base
	dims int
}

func (op reluOp) Arity() int { return 1 }

func (op reluOp) Type() hm.Type {
	t := G.TensorType{Dims: op.dims, Of: hm.TypeVariable('a')}
	return hm.NewFnType(t, t)
}

func (op reluOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShapes("ReLU", op.dims, ds)
}

func (op reluOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ReLU"
	if err := pwValues(name, op.dims, vs, 1); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.ReLU(vs[0])
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		return reluHost[float32](name, vs, false)
	}
	return reluHost[float64](name, vs, false)
}

// reluHost runs the forward (vs = x) or the backward (vs = x, dy) on the host.
func reluHost[F float32 | float64](name string, vs []G.Value, grad bool) (G.Value, error) {
	x, err := hostFloats[F](name, "x", vs[0])
	if err != nil {
		return nil, err
	}
	out, o := newDense[F](vs[0].Shape().Clone()...)
	if !grad {
		return out, opkit.Wrap(name, kernels.ReLU(o, x))
	}
	dy, err := hostFloats[F](name, "dy", vs[1])
	if err != nil {
		return nil, err
	}
	return out, opkit.Wrap(name, kernels.ReLUBackward(o, x, dy))
}

func (op reluOp) String() string        { return fmt.Sprintf("op.ReLU{dims=%d}", op.dims) }
func (op reluOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op reluOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op reluOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff: dx = ReLUGrad(x, dy).
func (op reluOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, opkit.Errorf("ReLU", "want 1 input, got %d", len(inputs))
	}
	d, err := G.ApplyOp(reluGradOp(op), inputs[0], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d}, nil
}

// DoDiff accumulates the gradient into x's.
func (op reluOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("ReLU.DoDiff", inputs, output, 1, 0, "x", func(dy G.Value) (G.Value, error) {
		return reluGradOp(op).Do(inputs[0].Value(), dy)
	})
}

// reluGradOp: x, dy → dy where x > 0, else 0.
type reluGradOp struct {
	opkit.Base
	dims int
}

func (op reluGradOp) Arity() int { return 2 }

func (op reluGradOp) Type() hm.Type {
	t := G.TensorType{Dims: op.dims, Of: hm.TypeVariable('a')}
	return hm.NewFnType(t, t, t)
}

func (op reluGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return sameShapes("ReLUGrad", op.dims, ds)
}

func (op reluGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ReLUGrad"
	if err := pwValues(name, op.dims, vs, 2); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.ReLUGrad(vs[0], vs[1])
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		return reluHost[float32](name, vs, true)
	}
	return reluHost[float64](name, vs, true)
}

func (op reluGradOp) String() string        { return fmt.Sprintf("op.ReLUGrad{dims=%d}", op.dims) }
func (op reluGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op reluGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }
