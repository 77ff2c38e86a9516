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

// Cast converts a node between float32 and float64, or between float32 and bfloat16, element
// by element (narrowing rounds to nearest even). Its gradient is the output gradient cast back
// to x's dtype. Cast returns x itself when it already has dtype to. It runs on the device for
// device values. A scalar (0-d) node converts between float32 and float64 only: Gorgonia has
// no bfloat16 scalar value. Gorgonia's own ConvType converts only between float and int dtypes.
func Cast(x *G.Node, to tensor.Dtype) (*G.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("gomoe: Cast: x is nil")
	}
	if !isData(x.Dtype()) {
		return nil, fmt.Errorf("gomoe: Cast: x: dtype %v, want float32, float64 or bfloat16", x.Dtype())
	}
	if !isData(to) {
		return nil, fmt.Errorf("gomoe: Cast: target: dtype %v, want float32, float64 or bfloat16", to)
	}
	if x.Shape().TotalSize() == 0 {
		return nil, fmt.Errorf("gomoe: Cast: x has shape %v, want a non-empty tensor (Gorgonia cannot allocate the gradient of an empty tensor)", x.Shape())
	}
	if x.Dtype() == to {
		return x, nil
	}
	if (x.Dtype() == bfloat16.Dtype && to != tensor.Float32) || (to == bfloat16.Dtype && x.Dtype() != tensor.Float32) {
		return nil, fmt.Errorf("gomoe: Cast: %v to %v is not supported (bfloat16 converts to and from float32)", x.Dtype(), to)
	}
	if x.Dims() == 0 && (x.Dtype() == bfloat16.Dtype || to == bfloat16.Dtype) {
		// Gorgonia's scalar values are *G.F32 and *G.F64: a scalar node has no bfloat16 value.
		return nil, fmt.Errorf("gomoe: Cast: a scalar cannot be cast %v to %v (Gorgonia has no bfloat16 scalar value; cast a tensor of shape (1))", x.Dtype(), to)
	}
	return opkit.ApplyOp("Cast", castOp{from: x.Dtype(), to: to, dims: x.Dims()}, x)
}

type castOp struct {
	opkit.Base
	from, to tensor.Dtype
	dims     int
}

func (op castOp) Arity() int { return 1 }

// Type: Tensor-n from → Tensor-n to.
func (op castOp) Type() hm.Type {
	if op.dims == 0 {
		return hm.NewFnType(op.from, op.to)
	}
	return hm.NewFnType(G.TensorType{Dims: op.dims, Of: op.from}, G.TensorType{Dims: op.dims, Of: op.to})
}

func (op castOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 1 {
		return nil, fmt.Errorf("gomoe: Cast: want 1 input, got %d", len(ds))
	}
	s, ok := ds[0].(tensor.Shape)
	if !ok || s.Dims() != op.dims {
		return nil, fmt.Errorf("gomoe: Cast: input has shape %v, want %d dims", ds[0], op.dims)
	}
	return s.Clone(), nil
}

// castValue converts v (of dtype from) to a new tensor of dtype to.
func castValue(v G.Value, from, to tensor.Dtype) (*tensor.Dense, error) {
	d, err := gmmDense("Cast", "x", v, from, nil)
	if err != nil {
		return nil, err
	}
	out := tensor.New(tensor.Of(to), tensor.WithShape(d.Shape().Clone()...))
	switch {
	case from == tensor.Float64 && to == tensor.Float32:
		err = kernels.Cast(out.Float32s(), d.Float64s())
	case from == tensor.Float32 && to == tensor.Float64:
		err = kernels.Cast(out.Float64s(), d.Float32s())
	case from == tensor.Float32 && to == bfloat16.Dtype:
		err = kernels.CastToBF16(out.Data().([]bfloat16.BFloat16), d.Float32s())
	case from == bfloat16.Dtype && to == tensor.Float32:
		b, ok := d.Data().([]bfloat16.BFloat16)
		if !ok {
			return nil, fmt.Errorf("gomoe: Cast: x holds %T, want []bfloat16.BFloat16", d.Data())
		}
		err = kernels.CastFromBF16(out.Float32s(), b)
	default:
		return nil, fmt.Errorf("gomoe: Cast: %v to %v is not supported", from, to)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (op castOp) Do(vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity("Cast", vs, 1); err != nil {
		return nil, err
	}
	dev, err := onDevice("Cast", vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		if vs[0].Dtype() != op.from {
			return nil, fmt.Errorf("gomoe: Cast: x has dtype %v, want %v", vs[0].Dtype(), op.from)
		}
		v, err := dev.Cast(vs[0], op.to)
		return v, opkit.Wrap("Cast", err)
	}
	if op.dims == 0 {
		var f float64
		switch x := vs[0].Data().(type) {
		case float64:
			f = x
		case float32:
			f = float64(x)
		default:
			return nil, fmt.Errorf("gomoe: Cast: scalar %T is not a float", vs[0].Data())
		}
		switch op.to {
		case tensor.Float32:
			return G.NewF32(float32(f)), nil
		case tensor.Float64:
			return G.NewF64(f), nil
		}
		return nil, fmt.Errorf("gomoe: Cast: a scalar cannot be cast to %v", op.to)
	}
	return castValue(vs[0], op.from, op.to)
}

func (op castOp) String() string {
	return fmt.Sprintf("op.Cast{from=%v to=%v dims=%d}", op.from, op.to, op.dims)
}
func (op castOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op castOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op castOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff casts the output gradient back to the input dtype.
func (op castOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(castOp{from: op.to, to: op.from, dims: op.dims}, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

// DoDiff adds the output gradient, cast back, into x's gradient.
func (op castOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	gxv, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gov, err := output.Grad()
	if err != nil {
		return err
	}
	var back G.Value
	if op.dims == 0 { // the lisp machine's scalar gradients are host *G.F32 and *G.F64
		s, err := scalarOf("Cast.DoDiff", "the output gradient", gov)
		if err != nil {
			return err
		}
		back = G.NewF64(s)
		if op.from == tensor.Float32 {
			back = G.NewF32(float32(s))
		}
	} else if back, err = castValue(gov, op.to, op.from); err != nil {
		return err
	}
	// accumulate adds in x's dtype, bfloat16 included (read as float64, its bytes gave a
	// gradient of zeros or garbage).
	return accumulate("Cast.DoDiff", gradUpdate{"x", gxv, back})
}

var (
	_ G.SDOp = castOp{}
	_ G.ADOp = castOp{}
)
