//go:build gomoecuda

package device

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Device versions of package op's pointwise ops (pointwise.go), top-k routing, the top-k
// gather, casts, ScaleRows and RowDot, and the copies between host and device.

// sameDevice returns the engine and kernel dtype of device values of one dtype and size.
func sameDevice(vs ...G.Value) (*Engine, kernels.DType, error) {
	e, err := devOf(vs...)
	if err != nil {
		return nil, 0, err
	}
	dt, err := DType(vs[0].Dtype())
	if err != nil {
		return nil, 0, err
	}
	n := vs[0].Shape().TotalSize()
	for i, v := range vs {
		if v.Dtype() != vs[0].Dtype() || v.Shape().TotalSize() != n {
			return nil, 0, fmt.Errorf("input %d is %v %v, input 0 is %v %v", i, v.Dtype(), v.Shape(), vs[0].Dtype(), vs[0].Shape())
		}
		if err := contiguous(fmt.Sprintf("input %d", i), v); err != nil {
			return nil, 0, err
		}
	}
	return e, dt, nil
}

func (cudaBackend) Pointwise(k Pointwise, in ...G.Value) (G.Value, error) {
	if len(in) != k.Arity {
		return nil, fmt.Errorf("%v: want %d inputs, got %d", k, k.Arity, len(in))
	}
	if k.Packed {
		return swigluPacked(in[0], nil)
	}
	e, dt, err := sameDevice(in...)
	if err != nil {
		return nil, err
	}
	out, err := e.NewStepTensor(in[0].Dtype(), in[0].Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	n := int64(in[0].Shape().TotalSize())
	if k.Row {
		cols := in[0].Shape()[1]
		err = e.Kernels().RowForward(dt, k.RowOp, dptr(out), dptr(in[0]), n/int64(cols), cols)
	} else {
		b := dptr(in[0])
		if len(in) > 1 {
			b = dptr(in[1])
		}
		err = e.Kernels().ActivationForward(dt, k.Activation, dptr(out), dptr(in[0]), b, n)
	}
	if err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) PointwiseGrad(k Pointwise, in []G.Value, y, dy G.Value, want []bool) ([]G.Value, error) {
	if len(in) != k.Arity || len(want) != len(in) {
		return nil, fmt.Errorf("%v gradient: want %d inputs, got %d", k, k.Arity, len(in))
	}
	if k.Packed {
		if dy == nil {
			return nil, fmt.Errorf("%v gradient: dy is nil", k)
		}
		dz, err := swigluPacked(in[0], dy)
		return []G.Value{dz}, err
	}
	e, dt, err := sameDevice(append(append([]G.Value{}, in...), y, dy)...)
	if err != nil {
		return nil, err
	}
	n := int64(y.Shape().TotalSize())
	out := make([]G.Value, len(in))
	for i, w := range want {
		if !w {
			continue
		}
		d, err := e.NewStepTensor(y.Dtype(), y.Shape().Clone()...)
		if err != nil {
			return nil, err
		}
		if k.Row {
			cols := y.Shape()[1]
			err = e.Kernels().RowBackward(dt, k.RowOp, dptr(d), dptr(in[0]), dptr(y), dptr(dy), n/int64(cols), cols)
		} else {
			b := dptr(in[0])
			if len(in) > 1 {
				b = dptr(in[1])
			}
			err = e.Kernels().ActivationBackward(dt, k.Activation, i, dptr(d), dptr(in[0]), b, dptr(y), dptr(dy), n)
		}
		if err != nil {
			_ = e.Release(d)
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// swigluPacked runs the packed SwiGLU on z [R,2F]: the forward [R,F] for dy nil, else the
// gradient dz [R,2F] from dy [R,F].
func swigluPacked(z, dy G.Value) (G.Value, error) {
	vs := []G.Value{z}
	if dy != nil {
		vs = append(vs, dy)
	}
	e, err := devOf(vs...)
	if err != nil {
		return nil, err
	}
	dt, err := DType(z.Dtype())
	if err != nil {
		return nil, err
	}
	s := z.Shape()
	if s.Dims() != 2 || s[1]%2 != 0 {
		return nil, fmt.Errorf("z has shape %v, want (R, 2F)", s)
	}
	rows, f := s[0], s[1]/2
	if dy != nil && (dy.Dtype() != z.Dtype() || !dy.Shape().Eq(tensor.Shape{rows, f})) {
		return nil, fmt.Errorf("dy is %v %v, want %v (%d, %d)", dy.Dtype(), dy.Shape(), z.Dtype(), rows, f)
	}
	if err := contiguous("z", z); err != nil {
		return nil, err
	}
	if dy != nil {
		if err := contiguous("dy", dy); err != nil {
			return nil, err
		}
	}
	if dy == nil {
		out, err := e.NewStepTensor(z.Dtype(), rows, f)
		if err != nil {
			return nil, err
		}
		if err := e.Kernels().SwiGLUPackedForward(dt, dptr(out), dptr(z), int64(rows), f); err != nil {
			_ = e.Release(out)
			return nil, err
		}
		return out, nil
	}
	dz, err := e.NewStepTensor(z.Dtype(), rows, 2*f)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().SwiGLUPackedBackward(dt, dptr(dz), dptr(z), dptr(dy), int64(rows), f); err != nil {
		_ = e.Release(dz)
		return nil, err
	}
	return dz, nil
}

func (cudaBackend) TopK(scores, bias G.Value, k, groups, kept int) (G.Value, error) {
	e, err := devOf(scores, bias)
	if err != nil {
		return nil, err
	}
	dt, err := DType(scores.Dtype())
	if err != nil {
		return nil, err
	}
	T, E := scores.Shape()[0], scores.Shape()[1]
	if err := contiguous("scores", scores); err != nil {
		return nil, err
	}
	if bias != nil {
		if bias.Dtype() != scores.Dtype() || bias.Shape().TotalSize() != E {
			return nil, fmt.Errorf("bias is %v %v, want %v (E=%d)", bias.Dtype(), bias.Shape(), scores.Dtype(), E)
		}
	}
	ids, err := e.NewStepTensor(tensor.Int32, T, k)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().TopK(dt, dptr(ids), dptr(scores), dptr(bias), int64(T), E, k, groups, kept); err != nil {
		_ = e.Release(ids)
		return nil, err
	}
	return ids, nil
}

func gatherArgs(what string, v, ids G.Value) (*Engine, kernels.DType, int, int, error) {
	e, err := devOf(v, ids)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	dt, err := DType(v.Dtype())
	if err != nil {
		return nil, 0, 0, 0, err
	}
	if ids.Dtype() != tensor.Int32 || ids.Shape().Dims() != 2 {
		return nil, 0, 0, 0, fmt.Errorf("ids are %v %v, want int32 (T, K)", ids.Dtype(), ids.Shape())
	}
	if err := contiguous(what, v); err != nil {
		return nil, 0, 0, 0, err
	}
	if err := contiguous("ids", ids); err != nil {
		return nil, 0, 0, 0, err
	}
	return e, dt, ids.Shape()[0], ids.Shape()[1], nil
}

func (cudaBackend) GatherTopK(scores, ids G.Value) (G.Value, error) {
	e, dt, T, K, err := gatherArgs("scores", scores, ids)
	if err != nil {
		return nil, err
	}
	if scores.Shape()[0] != T {
		return nil, fmt.Errorf("scores have %d rows, ids %d", scores.Shape()[0], T)
	}
	out, err := e.NewStepTensor(scores.Dtype(), T, K)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().GatherTopK(dt, dptr(out), dptr(scores), dptr(ids), int64(T), scores.Shape()[1], K); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) GatherTopKGrad(g, ids G.Value, E int) (G.Value, error) {
	e, dt, T, K, err := gatherArgs("grad", g, ids)
	if err != nil {
		return nil, err
	}
	if !g.Shape().Eq(ids.Shape()) {
		return nil, fmt.Errorf("grad %v and ids %v, want both (T, K)", g.Shape(), ids.Shape())
	}
	out, err := e.NewStepTensor(g.Dtype(), T, E)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().GatherTopKBackward(dt, dptr(out), dptr(g), dptr(ids), int64(T), E, K); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) Cast(x G.Value, to tensor.Dtype) (G.Value, error) {
	e, err := devOf(x)
	if err != nil {
		return nil, err
	}
	from, err := DType(x.Dtype())
	if err != nil {
		return nil, err
	}
	dt, err := DType(to)
	if err != nil {
		return nil, err
	}
	if err := contiguous("x", x); err != nil {
		return nil, err
	}
	shape := x.Shape().Clone()
	if len(shape) == 0 {
		shape = tensor.Shape{1}
	}
	out, err := e.NewStepTensor(to, shape...)
	if err != nil {
		return nil, err
	}
	if len(x.Shape()) == 0 {
		if err := out.Reshape(); err != nil {
			_ = e.Release(out)
			return nil, err
		}
	}
	if err := e.Kernels().Convert(from, dt, dptr(out), dptr(x), int64(x.Shape().TotalSize())); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) ScaleRows(x, s G.Value) (G.Value, error) {
	e, err := devOf(x, s)
	if err != nil {
		return nil, err
	}
	dt, err := DType(x.Dtype())
	if err != nil {
		return nil, err
	}
	if err := contiguous("x", x); err != nil {
		return nil, err
	}
	if err := contiguous("s", s); err != nil {
		return nil, err
	}
	y, err := e.NewStepTensor(x.Dtype(), x.Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().ScaleRows(dt, dptr(y), dptr(x), dptr(s), int64(x.Shape()[0]), x.Shape()[1]); err != nil {
		_ = e.Release(y)
		return nil, err
	}
	return y, nil
}

func (cudaBackend) RowDot(a, b G.Value) (G.Value, error) {
	e, dt, err := sameDevice(a, b)
	if err != nil {
		return nil, err
	}
	pt := tensor.Float32
	if dt == kernels.F64 {
		pt = tensor.Float64
	}
	out, err := e.NewStepTensor(pt, a.Shape()[0])
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().RowDot(dt, dptr(out), dptr(a), dptr(b), int64(a.Shape()[0]), a.Shape()[1]); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) Upload(like G.Value, h *tensor.Dense) (G.Value, error) {
	e, err := devOf(like)
	if err != nil {
		return nil, err
	}
	d, err := e.NewStepTensor(h.Dtype(), h.Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	if err := e.Upload(d, h); err != nil {
		_ = e.Release(d)
		return nil, err
	}
	return d, nil
}

func (cudaBackend) Download(v G.Value) (*tensor.Dense, error) {
	e, err := devOf(v)
	if err != nil {
		return nil, err
	}
	return e.CopyOut(v.(tensor.Tensor))
}

func (cudaBackend) Write(dst G.Value, h *tensor.Dense) error {
	e, err := devOf(dst)
	if err != nil {
		return err
	}
	return e.Upload(dst.(tensor.Tensor), h)
}
