//go:build gomoecuda

package device

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// The fused router on the device (op.RouterTopK, op.RouterProbs): one launch each of
// router.cuh's kernels.

// routerArgs checks logits [T,E] (and ids [T,K] int32 when not nil) on one device and returns
// the engine, the dtype and T, E.
func routerArgs(logits, ids G.Value, more ...G.Value) (*Engine, kernels.DType, int, int, error) {
	vs := append([]G.Value{logits}, more...)
	if ids != nil {
		vs = append(vs, ids)
	}
	e, err := devOf(vs...)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	dt, err := DType(logits.Dtype())
	if err != nil {
		return nil, 0, 0, 0, err
	}
	s := logits.Shape()
	if s.Dims() != 2 {
		return nil, 0, 0, 0, fmt.Errorf("logits have shape %v, want (T, E)", s)
	}
	for _, v := range vs {
		if v != nil {
			if err := contiguous("router input", v); err != nil {
				return nil, 0, 0, 0, err
			}
		}
	}
	if ids != nil {
		if is := ids.Shape(); ids.Dtype() != tensor.Int32 || is.Dims() != 2 || is[0] != s[0] {
			return nil, 0, 0, 0, fmt.Errorf("ids are %v %v, want int32 (T=%d, K)", ids.Dtype(), is, s[0])
		}
	}
	return e, dt, s[0], s[1], nil
}

func (cudaBackend) RouterTopK(logits, bias G.Value, k int, r kernels.Router) (G.Value, error) {
	var more []G.Value
	if bias != nil {
		more = append(more, bias)
	}
	e, dt, T, E, err := routerArgs(logits, nil, more...)
	if err != nil {
		return nil, err
	}
	if bias != nil && (bias.Dtype() != logits.Dtype() || bias.Shape().TotalSize() != E) {
		return nil, fmt.Errorf("bias is %v %v, want %v (E=%d)", bias.Dtype(), bias.Shape(), logits.Dtype(), E)
	}
	ids, err := e.NewStepTensor(tensor.Int32, T, k)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().RouterTopK(dt, dptr(ids), dptr(logits), dptr(bias), int64(T), E, k, r); err != nil {
		_ = e.Release(ids)
		return nil, err
	}
	return ids, nil
}

func (cudaBackend) RouterProbs(logits, ids G.Value, r kernels.Router) (G.Value, error) {
	e, dt, T, E, err := routerArgs(logits, ids)
	if err != nil {
		return nil, err
	}
	K := ids.Shape()[1]
	out, err := e.NewStepTensor(logits.Dtype(), T, K)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().RouterProbs(dt, dptr(out), dptr(logits), dptr(ids), int64(T), E, K, r); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

func (cudaBackend) RouterProbsGrad(logits, ids, dprobs G.Value, r kernels.Router) (G.Value, error) {
	e, dt, T, E, err := routerArgs(logits, ids, dprobs)
	if err != nil {
		return nil, err
	}
	if dprobs.Dtype() != logits.Dtype() || !dprobs.Shape().Eq(ids.Shape()) {
		return nil, fmt.Errorf("dprobs are %v %v, want %v %v", dprobs.Dtype(), dprobs.Shape(), logits.Dtype(), ids.Shape())
	}
	K := ids.Shape()[1]
	out, err := e.NewStepTensor(logits.Dtype(), T, E)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().RouterProbsBackward(dt, dptr(out), dptr(logits), dptr(ids), dptr(dprobs), int64(T), E, K, r); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}
