//go:build gomoecuda

package device

import (
	"fmt"

	"gorgonia.org/cu"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/kernels"
)

// Element-wise arithmetic on device tensors (tensor.Adder, Suber, Muler, Diver and their
// scalar forms), which Gorgonia's Add, Sub, HadamardProd, HadamardDiv, Mul by a scalar and its
// gradient plumbing (summing the gradients of a node used twice) call. Results are correctly
// rounded in the tensors' dtype (bfloat16 computes in float32 and rounds once), so they equal
// the CPU's bit for bit.

// Add computes a + b element-wise. See binary for the operands and options.
func (e *Engine) Add(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(kernels.OpAdd, a, b, opts)
}

// Sub computes a − b element-wise.
func (e *Engine) Sub(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(kernels.OpSub, a, b, opts)
}

// Mul computes a·b element-wise (the Hadamard product).
func (e *Engine) Mul(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(kernels.OpMul, a, b, opts)
}

// Div computes a / b element-wise.
func (e *Engine) Div(a, b tensor.Tensor, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.binary(kernels.OpDiv, a, b, opts)
}

// AddScalar computes t + s (leftTensor) or s + t for a device tensor t and a Go scalar s.
func (e *Engine) AddScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalar(kernels.OpAdd, t, s, leftTensor, opts)
}

// SubScalar computes t − s (leftTensor) or s − t.
func (e *Engine) SubScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalar(kernels.OpSub, t, s, leftTensor, opts)
}

// MulScalar computes t·s.
func (e *Engine) MulScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalar(kernels.OpMul, t, s, leftTensor, opts)
}

// DivScalar computes t / s (leftTensor) or s / t.
func (e *Engine) DivScalar(t tensor.Tensor, s interface{}, leftTensor bool, opts ...tensor.FuncOpt) (tensor.Tensor, error) {
	return e.scalar(kernels.OpDiv, t, s, leftTensor, opts)
}

// deviceDense returns t as a contiguous dense tensor on this engine.
func (e *Engine) deviceDense(what string, t tensor.Tensor) (*tensor.Dense, error) {
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil {
		return nil, fmt.Errorf("device: %s is a %T, want a *tensor.Dense", what, t)
	}
	if !e.Owns(d) {
		return nil, fmt.Errorf("device: %s is not on this engine (copy it in with CopyIn)", what)
	}
	if d.RequiresIterator() {
		return nil, fmt.Errorf("device: %s is a non-contiguous view", what)
	}
	return d, nil
}

// output picks the result tensor of an element-wise op on a per the options: the reuse
// tensor, a itself (UseUnsafe) or a new step tensor. incr reports tensor.WithIncr (the
// result is added into the reuse tensor).
func (e *Engine) output(name string, a *tensor.Dense, opts []tensor.FuncOpt) (out *tensor.Dense, incr bool, err error) {
	fo := tensor.ParseFuncOpts(opts...)
	reuse, incr := fo.IncrReuse()
	switch {
	case reuse != nil:
		rd, ok := reuse.(*tensor.Dense)
		if !ok || !e.Owns(rd) || rd.Dtype() != a.Dtype() || rd.Shape().TotalSize() != a.Shape().TotalSize() || rd.RequiresIterator() {
			return nil, false, fmt.Errorf("device: %s: the reuse tensor is not a matching device tensor", name)
		}
		return rd, incr, nil
	case !fo.Safe():
		return a, false, nil
	}
	out, err = e.NewStepTensor(a.Dtype(), a.Shape().Clone()...)
	return out, false, err
}

// binary runs out = a op b for device tensors of one dtype and size, honouring
// tensor.WithReuse, tensor.UseUnsafe and tensor.WithIncr.
func (e *Engine) binary(op kernels.BinaryOp, a, b tensor.Tensor, opts []tensor.FuncOpt) (tensor.Tensor, error) {
	name := [...]string{"Add", "Sub", "Mul", "Div"}[op]
	if err := e.ok(); err != nil {
		return nil, err
	}
	ad, err := e.deviceDense(name+" operand a", a)
	if err != nil {
		return nil, err
	}
	bd, err := e.deviceDense(name+" operand b", b)
	if err != nil {
		return nil, err
	}
	if ad.Dtype() != bd.Dtype() || !ad.Shape().Eq(bd.Shape()) {
		return nil, fmt.Errorf("device: %s of %v %v and %v %v", name, ad.Dtype(), ad.Shape(), bd.Dtype(), bd.Shape())
	}
	dt, err := DType(ad.Dtype())
	if err != nil {
		return nil, err
	}
	out, incr, err := e.output(name, ad, opts)
	if err != nil {
		return nil, err
	}
	n := int64(ad.Shape().TotalSize())
	return e.finish(dt, op, out, incr, cu.DevicePtr(ad.Uintptr()), cu.DevicePtr(bd.Uintptr()), 0, n)
}

// finish writes a op b (a zero pointer is the scalar s) into out, or adds it into out for incr.
func (e *Engine) finish(dt kernels.DType, op kernels.BinaryOp, out *tensor.Dense, incr bool, a, b cu.DevicePtr, s float64, n int64) (tensor.Tensor, error) {
	o := cu.DevicePtr(out.Uintptr())
	if !incr {
		return out, e.k.Binary(dt, op, o, a, b, s, n)
	}
	tmp, err := e.NewStepTensor(out.Dtype(), out.Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	defer e.pool.Free(tmp.Uintptr())
	t := cu.DevicePtr(tmp.Uintptr())
	if err := e.k.Binary(dt, op, t, a, b, s, n); err != nil {
		return nil, err
	}
	return out, e.k.Binary(dt, kernels.OpAdd, o, o, t, 0, n)
}

// scalarValue converts a Go scalar (or a one-element host tensor) of the tensor's dtype to
// float64. A one-element device tensor is refused: reading it would need a host sync (add
// 0-d device values with op.AddScalars instead).
func (e *Engine) scalarValue(dt tensor.Dtype, s interface{}) (float64, error) {
	if d, ok := s.(*tensor.Dense); ok && d != nil && d.MemSize() > 0 && Lookup(d) != nil {
		return 0, fmt.Errorf("device: a one-element device tensor as the scalar operand; use op.AddScalars or a tensor of the same shape")
	}
	return scalarValue(dt, s)
}

// scalarValue converts a Go scalar (or a one-element host tensor) of the tensor's dtype to
// float64.
func scalarValue(dt tensor.Dtype, s interface{}) (float64, error) {
	switch v := s.(type) {
	case float32:
		if dt == tensor.Float32 || dt == bfloat16.Dtype {
			return float64(v), nil
		}
	case float64:
		if dt == tensor.Float64 {
			return v, nil
		}
	case bfloat16.BFloat16:
		if dt == bfloat16.Dtype {
			return float64(v.Float32()), nil
		}
	case *tensor.Dense:
		if v != nil && v.Shape().TotalSize() == 1 && v.IsNativelyAccessible() {
			return scalarValue(dt, v.Get(0))
		}
	}
	return 0, fmt.Errorf("device: scalar %v (%T) for a %v tensor", s, s, dt)
}

func (e *Engine) scalar(op kernels.BinaryOp, t tensor.Tensor, s interface{}, leftTensor bool, opts []tensor.FuncOpt) (tensor.Tensor, error) {
	name := [...]string{"AddScalar", "SubScalar", "MulScalar", "DivScalar"}[op]
	if err := e.ok(); err != nil {
		return nil, err
	}
	td, err := e.deviceDense(name+" operand", t)
	if err != nil {
		return nil, err
	}
	dt, err := DType(td.Dtype())
	if err != nil {
		return nil, err
	}
	v, err := e.scalarValue(td.Dtype(), s)
	if err != nil {
		return nil, err
	}
	out, incr, err := e.output(name, td, opts)
	if err != nil {
		return nil, err
	}
	n := int64(td.Shape().TotalSize())
	p := cu.DevicePtr(td.Uintptr())
	if leftTensor {
		return e.finish(dt, op, out, incr, p, 0, v, n)
	}
	return e.finish(dt, op, out, incr, 0, p, v, n)
}
