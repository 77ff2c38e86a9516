package op

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
)

// Scale returns c·x element-wise for a float tensor x and a finite constant c (rounded to x's
// dtype first; for a float32 x, a nonzero c that float32 rounds to 0 or ±Inf is an error).
// Unlike G.Mul with a constant node, its gradient is only c·dy: Gorgonia's Mul also
// differentiates with respect to the constant, a full reduction that device values cannot take.
// On the device it runs as the engine's MulScalar.
func Scale(x *G.Node, c float64) (*G.Node, error) {
	if x == nil {
		return nil, opkit.Errorf("Scale", "x is nil")
	}
	if err := wantFloat(x.Dtype()); err != nil {
		return nil, opkit.Errorf("Scale", "x: %v", err)
	}
	if x.Shape().TotalSize() == 0 {
		return nil, opkit.Errorf("Scale", "x has shape %v, want a non-empty tensor (Gorgonia cannot allocate the gradient of an empty tensor)", x.Shape())
	}
	if math.IsNaN(c) || math.IsInf(c, 0) {
		return nil, opkit.Errorf("Scale", "constant %v is not finite", c)
	}
	if f := float32(c); x.Dtype() == tensor.Float32 && c != 0 && (f == 0 || math.IsInf(float64(f), 0)) {
		return nil, opkit.Errorf("Scale", "constant %v rounds to %v in float32, x's dtype", c, f)
	}
	return opkit.ApplyOp("Scale", scaleOp{c: c, dims: x.Dims()}, x)
}

// scaleOp: x → c·x.
type scaleOp struct {
	opkit.Base
	c    float64
	dims int
}

func (op scaleOp) Arity() int { return 1 }

func (op scaleOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: op.dims, Of: a}
	if op.dims == 0 {
		return hm.NewFnType(a, a)
	}
	return hm.NewFnType(t, t)
}

func (op scaleOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 1 {
		return nil, opkit.Errorf("Scale", "want 1 input, got %d", len(ds))
	}
	s, err := shapeOf("Scale", "x", ds[0])
	if err != nil {
		return nil, err
	}
	return s.Clone(), nil
}

func (op scaleOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "Scale"
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	v := vs[0]
	if err := checkFloat(name, "x", v.Dtype()); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, v)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		t, ok := v.(tensor.Tensor)
		if !ok {
			return nil, opkit.Errorf(name, "x is a %T", v)
		}
		var c any = op.c
		if v.Dtype() == tensor.Float32 {
			c = float32(op.c)
		}
		out, err := tensor.Mul(t, c)
		return out, opkit.Wrap(name, err)
	}
	switch v.Dtype() {
	case tensor.Float32:
		return scaleHost[float32](name, v, op.c)
	case tensor.Float64:
		return scaleHost[float64](name, v, op.c)
	}
	return nil, opkit.Errorf(name, "dtype %v, want float32 or float64", v.Dtype())
}

func scaleHost[F float32 | float64](name string, v G.Value, c float64) (G.Value, error) {
	switch x := v.(type) {
	case *G.F32:
		return G.NewF32(float32(*x) * float32(c)), nil
	case *G.F64:
		return G.NewF64(float64(*x) * c), nil
	}
	s, err := hostFloats[F](name, "x", v)
	if err != nil {
		return nil, err
	}
	out, o := newDense[F](v.Shape().Clone()...)
	cf := F(c)
	for i, x := range s {
		o[i] = x * cf
	}
	return out, nil
}

func (op scaleOp) String() string        { return fmt.Sprintf("op.Scale{c=%v dims=%d}", op.c, op.dims) }
func (op scaleOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op scaleOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op scaleOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff: dx = c·dy.
func (op scaleOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, opkit.Errorf("Scale", "want 1 input, got %d", len(inputs))
	}
	d, err := G.ApplyOp(op, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d}, nil
}

// DoDiff accumulates c·dy into x's gradient.
func (op scaleOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("Scale.DoDiff", inputs, output, 1, 0, "x", func(gy G.Value) (G.Value, error) {
		return op.Do(gy)
	})
}
