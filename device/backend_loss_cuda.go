//go:build gomoecuda

package device

import (
	"fmt"

	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Device versions of package op's routing losses (balance_loss.go, z_loss.go). A loss is a device
// tensor of scalar shape (NewStepTensor with no dims: one element); a gradient reads dy from
// the device (a one-element device tensor) or takes the host number dyv.

// lossFloat maps a loss dtype to the kernels' dtype (float32 or float64 only).
func lossFloat(dt tensor.Dtype) (kernels.DType, error) {
	switch dt {
	case tensor.Float32:
		return kernels.F32, nil
	case tensor.Float64:
		return kernels.F64, nil
	}
	return 0, fmt.Errorf("dtype %v, want float32 or float64", dt)
}

// lossDyPtr checks a device dy (nil: none) against the engine and dtype.
func lossDyPtr(e *Engine, dy G.Value, dt tensor.Dtype) (cu.DevicePtr, error) {
	if dy == nil {
		return 0, nil
	}
	x, err := devOf(dy)
	if err != nil {
		return 0, fmt.Errorf("dy: %w", err)
	}
	if x != e {
		return 0, fmt.Errorf("dy lives on another GPU")
	}
	if dy.Dtype() != dt || dy.Shape().TotalSize() != 1 {
		return 0, fmt.Errorf("dy is %v %v, want one %v", dy.Dtype(), dy.Shape(), dt)
	}
	return dptr(dy), nil
}

func balanceDevArgs(ids, scores G.Value, experts, topK, seqs int) (*Engine, int, error) {
	e, err := devOf(ids, scores)
	if err != nil {
		return nil, 0, err
	}
	T, err := balanceIDs(ids, topK)
	if err != nil {
		return nil, 0, err
	}
	if s := scores.Shape(); s.Dims() != 2 || s[0] != T || s[1] != experts {
		return nil, 0, fmt.Errorf("scores have shape %v, want (T=%d, E=%d)", s, T, experts)
	}
	if err := contiguous("scores", scores); err != nil {
		return nil, 0, err
	}
	if seqs < 1 || T%seqs != 0 {
		return nil, 0, fmt.Errorf("T=%d tokens do not split into %d sequences", T, seqs)
	}
	return e, T, nil
}

// lossWork allocates scratch memory for one call; the caller frees it right after enqueueing
// (later users of the block are later on the same stream).
func lossWork(e *Engine, n int64) (tensor.Memory, error) {
	return e.Alloc(max(n, 8))
}

func (cudaBackend) BalanceLoss(ids, x G.Value, experts, topK, seqs int, scale float64, score kernels.RouterScore) (G.Value, error) {
	e, T, err := balanceDevArgs(ids, x, experts, topK, seqs)
	if err != nil {
		return nil, err
	}
	dt, err := lossFloat(x.Dtype())
	if err != nil {
		return nil, err
	}
	out, err := e.NewStepTensor(x.Dtype())
	if err != nil {
		return nil, err
	}
	work, err := lossWork(e, kernels.BalanceLossWorkBytes(T, experts, seqs))
	if err != nil {
		_ = e.Release(out)
		return nil, err
	}
	defer e.Free(work, 0)
	k, wp := e.Kernels(), cu.DevicePtr(work.Uintptr())
	if score == 0 {
		err = k.BalanceLossForward(dt, dptr(out), dptr(ids), dptr(x), wp, T, topK, experts, seqs, scale)
	} else {
		err = k.RouterBalanceLossForward(dt, dptr(out), dptr(ids), dptr(x), wp, T, topK, experts, seqs, scale, score)
	}
	if err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) BalanceLossGrad(ids, x G.Value, dt tensor.Dtype, experts, topK, seqs int, scale float64, dy G.Value, dyv float64, score kernels.RouterScore) (G.Value, error) {
	var e *Engine
	var T int
	var err error
	if score == 0 {
		if e, err = devOf(ids); err == nil {
			T, err = balanceIDs(ids, topK)
		}
	} else {
		e, T, err = balanceDevArgs(ids, x, experts, topK, seqs)
		if err == nil && x.Dtype() != dt {
			err = fmt.Errorf("logits are %v, want %v", x.Dtype(), dt)
		}
	}
	if err != nil {
		return nil, err
	}
	kd, err := lossFloat(dt)
	if err != nil {
		return nil, err
	}
	dyp, err := lossDyPtr(e, dy, dt)
	if err != nil {
		return nil, err
	}
	ds, err := e.NewStepTensor(dt, T, experts)
	if err != nil {
		return nil, err
	}
	work, err := lossWork(e, kernels.BalanceLossWorkBytes(T, experts, seqs))
	if err != nil {
		_ = e.Release(ds)
		return nil, err
	}
	defer e.Free(work, 0)
	k, wp := e.Kernels(), cu.DevicePtr(work.Uintptr())
	if score == 0 {
		err = k.BalanceLossBackward(kd, dptr(ds), dptr(ids), wp, dyp, T, topK, experts, seqs, scale, dyv)
	} else {
		err = k.RouterBalanceLossBackward(kd, dptr(ds), dptr(ids), dptr(x), wp, dyp, T, topK, experts, seqs, scale, dyv, score)
	}
	if err != nil {
		_ = e.Release(ds)
		return nil, err
	}
	return ds, nil
}

// balanceIDs checks ids [T, topK] int32, contiguous, and returns T.
func balanceIDs(ids G.Value, topK int) (int, error) {
	is := ids.Shape()
	if ids.Dtype() != tensor.Int32 || is.Dims() != 2 || is[1] != topK {
		return 0, fmt.Errorf("ids are %v %v, want int32 (T, K=%d)", ids.Dtype(), is, topK)
	}
	if err := contiguous("ids", ids); err != nil {
		return 0, err
	}
	return is[0], nil
}

func zDevArgs(logits G.Value) (*Engine, kernels.DType, int, int, error) {
	e, err := devOf(logits)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	dt, err := lossFloat(logits.Dtype())
	if err != nil {
		return nil, 0, 0, 0, err
	}
	s := logits.Shape()
	if s.Dims() != 2 {
		return nil, 0, 0, 0, fmt.Errorf("logits have shape %v, want (T, E)", s)
	}
	if err := contiguous("logits", logits); err != nil {
		return nil, 0, 0, 0, err
	}
	return e, dt, s[0], s[1], nil
}

func (cudaBackend) ZLoss(logits G.Value, scale float64) (G.Value, error) {
	e, dt, T, E, err := zDevArgs(logits)
	if err != nil {
		return nil, err
	}
	out, err := e.NewStepTensor(logits.Dtype())
	if err != nil {
		return nil, err
	}
	work, err := lossWork(e, kernels.ZLossWorkBytes(T))
	if err != nil {
		_ = e.Release(out)
		return nil, err
	}
	defer e.Free(work, 0)
	if err := e.Kernels().ZLossForward(dt, dptr(out), dptr(logits), cu.DevicePtr(work.Uintptr()), T, E, scale); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) ZLossGrad(logits G.Value, scale float64, dy G.Value, dyv float64) (G.Value, error) {
	e, dt, T, E, err := zDevArgs(logits)
	if err != nil {
		return nil, err
	}
	dyp, err := lossDyPtr(e, dy, logits.Dtype())
	if err != nil {
		return nil, err
	}
	dx, err := e.NewStepTensor(logits.Dtype(), T, E)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().ZLossBackward(dt, dptr(dx), dptr(logits), dyp, T, E, scale, dyv); err != nil {
		_ = e.Release(dx)
		return nil, err
	}
	return dx, nil
}
