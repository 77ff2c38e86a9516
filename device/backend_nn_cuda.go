//go:build gomoecuda

package device

import (
	"fmt"

	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Device versions of package op's BiasAdd, ReLU, RMSNorm, CrossEntropy and Embedding: the CUDA twins of
// package kernels' bias.go, relu.go, rmsnorm.go, cross_entropy.go and embedding.go on values held by
// an Engine.

// nnMatrix returns the engine, kernel dtype and shape of a device matrix x [N,D] and checks
// that the other values (nil skipped) are on the same engine, of x's dtype, contiguous, with
// the given element counts.
func nnMatrix(x G.Value, others []G.Value, sizes []int) (*Engine, kernels.DType, int64, int, error) {
	e, err := devOf(append([]G.Value{x}, others...)...)
	if err != nil {
		return nil, 0, 0, 0, err
	}
	s := x.Shape()
	if s.Dims() != 2 || s[0] < 1 || s[1] < 1 {
		return nil, 0, 0, 0, fmt.Errorf("x has shape %v, want a non-empty matrix", s)
	}
	if err := contiguous("x", x); err != nil {
		return nil, 0, 0, 0, err
	}
	for i, v := range others {
		if v == nil {
			continue
		}
		if v.Dtype() != x.Dtype() {
			return nil, 0, 0, 0, fmt.Errorf("input %d has dtype %v, x %v", i+1, v.Dtype(), x.Dtype())
		}
		if err := checkSize(fmt.Sprintf("input %d", i+1), v, sizes[i]); err != nil {
			return nil, 0, 0, 0, err
		}
	}
	dt, err := DType(x.Dtype())
	if err != nil {
		return nil, 0, 0, 0, err
	}
	return e, dt, int64(s[0]), s[1], nil
}

// nnOut allocates a step tensor for a kernel's output and releases it if run fails.
func nnOut(e *Engine, dt tensor.Dtype, shape []int, run func(out cu.DevicePtr) error) (G.Value, error) {
	out, err := e.NewStepTensor(dt, shape...)
	if err != nil {
		return nil, err
	}
	if err := run(dptr(out)); err != nil {
		_ = e.Release(out)
		return nil, err
	}
	return out, nil
}

// scratch runs f with a device buffer of n float64s that goes back to the cache when f
// returns (later users of the memory are later on the same stream).
func scratch(e *Engine, n int64, f func(p cu.DevicePtr) error) error {
	m, err := e.Alloc(8 * n)
	if err != nil {
		return err
	}
	defer e.Free(m, 0)
	return f(cu.DevicePtr(m.Uintptr()))
}

func (cudaBackend) BiasAdd(x, b G.Value) (G.Value, error) {
	if x == nil || b == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, D, err := nnMatrix(x, []G.Value{b}, []int{lastDim(x)})
	if err != nil {
		return nil, err
	}
	return nnOut(e, x.Dtype(), []int{int(N), D}, func(o cu.DevicePtr) error {
		return e.Kernels().BiasAdd(dt, o, dptr(x), dptr(b), N, D)
	})
}

// lastDim is the size of v's last dimension (0 for a scalar).
func lastDim(v G.Value) int {
	s := v.Shape()
	if len(s) == 0 {
		return 0
	}
	return s[len(s)-1]
}

func (cudaBackend) ColSum(x G.Value) (G.Value, error) {
	if x == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, D, err := nnMatrix(x, nil, nil)
	if err != nil {
		return nil, err
	}
	return nnOut(e, x.Dtype(), []int{D}, func(o cu.DevicePtr) error {
		return e.Kernels().ColSum(dt, o, dptr(x), N, D)
	})
}

func (cudaBackend) ReLU(x G.Value) (G.Value, error) {
	e, dt, err := sameDevice(x)
	if err != nil {
		return nil, err
	}
	return nnOut(e, x.Dtype(), x.Shape().Clone(), func(o cu.DevicePtr) error {
		return e.Kernels().ReLU(dt, o, dptr(x), int64(x.Shape().TotalSize()))
	})
}

func (cudaBackend) ReLUGrad(x, dy G.Value) (G.Value, error) {
	e, dt, err := sameDevice(x, dy)
	if err != nil {
		return nil, err
	}
	return nnOut(e, x.Dtype(), x.Shape().Clone(), func(o cu.DevicePtr) error {
		return e.Kernels().ReLUBackward(dt, o, dptr(x), dptr(dy), int64(x.Shape().TotalSize()))
	})
}

func (cudaBackend) RMSNorm(x, gain G.Value, eps float64) (G.Value, error) {
	if x == nil || gain == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, D, err := nnMatrix(x, []G.Value{gain}, []int{lastDim(x)})
	if err != nil {
		return nil, err
	}
	return nnOut(e, x.Dtype(), []int{int(N), D}, func(o cu.DevicePtr) error {
		return e.Kernels().RMSNorm(dt, o, dptr(x), dptr(gain), N, D, eps)
	})
}

func (cudaBackend) RMSNormGrad(x, gain, dy G.Value, eps float64, which int) (G.Value, error) {
	if x == nil || gain == nil || dy == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, D, err := nnMatrix(x, []G.Value{gain, dy}, []int{lastDim(x), x.Shape().TotalSize()})
	if err != nil {
		return nil, err
	}
	switch which {
	case 0:
		return nnOut(e, x.Dtype(), []int{int(N), D}, func(o cu.DevicePtr) error {
			return e.Kernels().RMSNormBackward(dt, o, dptr(x), dptr(gain), dptr(dy), N, D, eps)
		})
	case 1:
		return nnOut(e, x.Dtype(), []int{D}, func(o cu.DevicePtr) error {
			return scratch(e, N, func(s cu.DevicePtr) error {
				return e.Kernels().RMSNormGainGrad(dt, o, dptr(x), dptr(dy), s, N, D, eps)
			})
		})
	}
	return nil, fmt.Errorf("RMSNorm has no input %d", which)
}

func (cudaBackend) CrossEntropy(logits, target G.Value) (G.Value, error) {
	if logits == nil || target == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, C, err := nnMatrix(logits, []G.Value{target}, []int{logits.Shape().TotalSize()})
	if err != nil {
		return nil, err
	}
	// A 0-d tensor: one element, shape ().
	return nnOut(e, logits.Dtype(), nil, func(o cu.DevicePtr) error {
		return scratch(e, N, func(s cu.DevicePtr) error {
			return e.Kernels().CrossEntropy(dt, o, dptr(logits), dptr(target), s, N, C)
		})
	})
}

func (cudaBackend) CrossEntropyGrad(logits, target, dy G.Value, scale float64) (G.Value, error) {
	if logits == nil || target == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, C, err := nnMatrix(logits, []G.Value{target, dy}, []int{logits.Shape().TotalSize(), 1})
	if err != nil {
		return nil, err
	}
	return nnOut(e, logits.Dtype(), []int{int(N), C}, func(o cu.DevicePtr) error {
		return e.Kernels().CrossEntropyBackward(dt, o, dptr(logits), dptr(target), dptr(dy), scale, N, C)
	})
}

// idsOf checks a device int32 vector of n ids.
func idsOf(ids G.Value, n int) error {
	if ids == nil || ids.Dtype() != tensor.Int32 || ids.Shape().TotalSize() != n {
		return fmt.Errorf("ids are not %d int32 values", n)
	}
	return contiguous("ids", ids)
}

func (cudaBackend) Embedding(table, ids G.Value) (G.Value, error) {
	if table == nil || ids == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, V, D, err := nnMatrix(table, nil, nil)
	if err != nil {
		return nil, err
	}
	if _, err := devOf(table, ids); err != nil {
		return nil, err
	}
	n := ids.Shape().TotalSize()
	if err := idsOf(ids, n); err != nil {
		return nil, err
	}
	return nnOut(e, table.Dtype(), []int{n, D}, func(o cu.DevicePtr) error {
		return e.Kernels().Embedding(dt, o, dptr(table), dptr(ids), int64(n), int(V), D)
	})
}

func (cudaBackend) EmbeddingGrad(dy, ids G.Value, V int) (G.Value, error) {
	if dy == nil || ids == nil {
		return nil, fmt.Errorf("nil input")
	}
	e, dt, N, D, err := nnMatrix(dy, nil, nil)
	if err != nil {
		return nil, err
	}
	if _, err := devOf(dy, ids); err != nil {
		return nil, err
	}
	if err := idsOf(ids, int(N)); err != nil {
		return nil, err
	}
	return nnOut(e, dy.Dtype(), []int{V, D}, func(o cu.DevicePtr) error {
		return e.Kernels().EmbeddingBackward(dt, o, dptr(dy), dptr(ids), N, V, D)
	})
}
