//go:build gomoecuda

package device

import (
	"fmt"

	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// cudaBackend is the Backend of the gomoecuda build: it runs on values held by an Engine,
// allocates each output as a step-scoped tensor of the inputs' engine (unless a method says
// otherwise) and launches the CUDA kernels of package kernels. Nothing here waits for the GPU
// unless a method says so. Its methods live in the backend*_cuda.go files: the routing ops
// here and in backend_gmm_cuda.go and backend_pointwise_cuda.go, the losses, the nn blocks,
// the optimizers (backend_train_cuda.go) and the row moves of package ep (backend_ep_cuda.go).
type cudaBackend struct{}

var _ Backend = cudaBackend{}

// engineBackend is the backend of an Engine that holds t, or nil.
func engineBackend(t tensor.Tensor) Backend {
	if Lookup(t) != nil {
		return cudaBackend{}
	}
	return nil
}

func (cudaBackend) Owns(v G.Value) bool {
	t, ok := v.(tensor.Tensor)
	return ok && Lookup(t) != nil
}

// devOf returns the engine that holds every non-nil value, or an error.
func devOf(vs ...G.Value) (*Engine, error) {
	var e *Engine
	for _, v := range vs {
		if v == nil {
			continue
		}
		t, ok := v.(tensor.Tensor)
		if !ok {
			return nil, fmt.Errorf("a %T is not a device tensor", v)
		}
		x := Lookup(t)
		if x == nil {
			return nil, fmt.Errorf("a value is not in GPU memory")
		}
		if e != nil && x != e {
			return nil, fmt.Errorf("values live on different GPUs")
		}
		e = x
	}
	if e == nil {
		return nil, fmt.Errorf("no device value")
	}
	return e, nil
}

func dptr(v G.Value) cu.DevicePtr {
	if v == nil {
		return 0
	}
	return cu.DevicePtr(v.(tensor.Tensor).Uintptr())
}

// contiguous rejects device views the kernels cannot read.
func contiguous(what string, v G.Value) error {
	if v == nil {
		return nil
	}
	if d, ok := v.(*tensor.Dense); ok && d.RequiresIterator() {
		return fmt.Errorf("%s is a non-contiguous device view", what)
	}
	return nil
}

// dataType checks the data dtype and, when probs are given, that they are float32 for
// float32 and bfloat16 data and float64 for float64 data.
func dataType(data, probs G.Value) (kernels.DType, error) {
	dt, err := DType(data.Dtype())
	if err != nil {
		return 0, err
	}
	if probs != nil {
		want := tensor.Float32
		if dt == kernels.F64 {
			want = tensor.Float64
		}
		if probs.Dtype() != want {
			return 0, fmt.Errorf("probs have dtype %v, want %v for %v data on the GPU", probs.Dtype(), want, data.Dtype())
		}
	}
	return dt, nil
}

func checkSize(what string, v G.Value, want int) error {
	if v == nil {
		return nil
	}
	if n := v.Shape().TotalSize(); n != want {
		return fmt.Errorf("%s has %d elements, want %d", what, n, want)
	}
	return contiguous(what, v)
}

func (cudaBackend) BuildPlan(g kernels.Geometry, ids, probs G.Value) (G.Value, error) {
	byProb := g.Mode == kernels.Capacity && g.Drop == kernels.DropByProb
	if !byProb {
		probs = nil
	}
	e, err := devOf(ids, probs)
	if err != nil {
		return nil, err
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	if ids.Dtype() != tensor.Int32 {
		return nil, fmt.Errorf("ids have dtype %v, want int32", ids.Dtype())
	}
	tk := g.T * g.K
	if err := checkSize("ids", ids, tk); err != nil {
		return nil, err
	}
	pt := kernels.F32
	if probs != nil {
		if err := checkSize("probs", probs, tk); err != nil {
			return nil, err
		}
		switch probs.Dtype() {
		case tensor.Float32:
		case tensor.Float64:
			pt = kernels.F64
		default:
			return nil, fmt.Errorf("probs have dtype %v, want float32 or float64", probs.Dtype())
		}
	}
	plan, err := e.NewStepTensor(tensor.Int32, g.PlanLen())
	if err != nil {
		return nil, err
	}
	work, err := e.Alloc(kernels.PlanWorkBytes(g))
	if err != nil {
		return nil, err
	}
	// The scratch goes back to the cache at once: later users are later on the same stream.
	defer e.Free(work, 0)
	if err := e.Kernels().BuildPlan(g, dptr(plan), dptr(ids), dptr(probs), pt, cu.DevicePtr(work.Uintptr())); err != nil {
		return nil, err
	}
	return plan, nil
}

// rowsOf checks a [n,H] device value and returns H.
func rowsOf(what string, v G.Value, n int) (int, error) {
	s := v.Shape()
	if len(s) != 2 || s[0] != n || s[1] < 1 {
		return 0, fmt.Errorf("%s has shape %v, want [%d,H]", what, s, n)
	}
	return s[1], contiguous(what, v)
}

func (cudaBackend) PermuteForward(g kernels.Geometry, x, plan G.Value) (G.Value, error) {
	e, err := devOf(x, plan)
	if err != nil {
		return nil, err
	}
	dt, err := dataType(x, nil)
	if err != nil {
		return nil, err
	}
	H, err := rowsOf("x", x, g.T)
	if err != nil {
		return nil, err
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, err
	}
	xp, err := e.NewStepTensor(x.Dtype(), g.Rows(), H)
	if err != nil {
		return nil, err
	}
	return xp, e.Kernels().PermuteForward(dt, g, H, dptr(xp), dptr(x), dptr(plan))
}

func (cudaBackend) PermuteBackward(g kernels.Geometry, dxp, plan G.Value) (G.Value, error) {
	e, err := devOf(dxp, plan)
	if err != nil {
		return nil, err
	}
	dt, err := dataType(dxp, nil)
	if err != nil {
		return nil, err
	}
	H, err := rowsOf("dxp", dxp, g.Rows())
	if err != nil {
		return nil, err
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, err
	}
	dx, err := e.NewStepTensor(dxp.Dtype(), g.T, H)
	if err != nil {
		return nil, err
	}
	return dx, e.Kernels().PermuteBackward(dt, g, H, dptr(dx), dptr(dxp), dptr(plan))
}

// probsKind checks a probs-like value (float32 or float64) and returns its kernels type.
func probsKind(what string, v G.Value, n int) (kernels.DType, error) {
	if err := checkSize(what, v, n); err != nil {
		return 0, err
	}
	switch v.Dtype() {
	case tensor.Float32:
		return kernels.F32, nil
	case tensor.Float64:
		return kernels.F64, nil
	}
	return 0, fmt.Errorf("%s has dtype %v, want float32 or float64", what, v.Dtype())
}

func (cudaBackend) PermuteProbsForward(g kernels.Geometry, probs, plan G.Value) (G.Value, error) {
	e, err := devOf(probs, plan)
	if err != nil {
		return nil, err
	}
	pt, err := probsKind("probs", probs, g.T*g.K)
	if err != nil {
		return nil, err
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, err
	}
	pp, err := e.NewStepTensor(probs.Dtype(), g.Rows())
	if err != nil {
		return nil, err
	}
	return pp, e.Kernels().PermuteProbsForward(pt, g, dptr(pp), dptr(probs), dptr(plan))
}

func (cudaBackend) PermuteProbsBackward(g kernels.Geometry, dpp, plan G.Value) (G.Value, error) {
	e, err := devOf(dpp, plan)
	if err != nil {
		return nil, err
	}
	pt, err := probsKind("dpp", dpp, g.Rows())
	if err != nil {
		return nil, err
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, err
	}
	dprobs, err := e.NewStepTensor(dpp.Dtype(), g.T, g.K)
	if err != nil {
		return nil, err
	}
	return dprobs, e.Kernels().PermuteProbsBackward(pt, g, dptr(dprobs), dptr(dpp), dptr(plan))
}

func (cudaBackend) UnpermuteForward(g kernels.Geometry, yp, probs, plan G.Value) (G.Value, error) {
	e, err := devOf(yp, probs, plan)
	if err != nil {
		return nil, err
	}
	dt, err := dataType(yp, probs)
	if err != nil {
		return nil, err
	}
	H, err := rowsOf("yp", yp, g.Rows())
	if err != nil {
		return nil, err
	}
	if err := checkSize("probs", probs, g.T*g.K); err != nil {
		return nil, err
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, err
	}
	y, err := e.NewStepTensor(yp.Dtype(), g.T, H)
	if err != nil {
		return nil, err
	}
	return y, e.Kernels().UnpermuteForward(dt, g, H, dptr(y), dptr(yp), dptr(probs), dptr(plan))
}

func (cudaBackend) UnpermuteBackward(g kernels.Geometry, dy, yp, probs, plan G.Value, wantRows, wantProbs bool) (G.Value, G.Value, error) {
	if !wantProbs {
		yp = nil
	}
	e, err := devOf(dy, yp, probs, plan)
	if err != nil {
		return nil, nil, err
	}
	dt, err := dataType(dy, probs)
	if err != nil {
		return nil, nil, err
	}
	H, err := rowsOf("dy", dy, g.T)
	if err != nil {
		return nil, nil, err
	}
	if wantProbs {
		if yp == nil {
			return nil, nil, fmt.Errorf("grad probs needs yp")
		}
		if yp.Dtype() != dy.Dtype() {
			return nil, nil, fmt.Errorf("yp has dtype %v, dy %v", yp.Dtype(), dy.Dtype())
		}
		if err := checkSize("yp", yp, g.Rows()*H); err != nil {
			return nil, nil, err
		}
	}
	if err := checkSize("probs", probs, g.T*g.K); err != nil {
		return nil, nil, err
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, nil, err
	}
	var dyp, dprobs *tensor.Dense
	if wantRows {
		if dyp, err = e.NewStepTensor(dy.Dtype(), g.Rows(), H); err != nil {
			return nil, nil, err
		}
	}
	if wantProbs {
		pdt := tensor.Float32
		if dt == kernels.F64 {
			pdt = tensor.Float64
		}
		if dprobs, err = e.NewStepTensor(pdt, g.T, g.K); err != nil {
			return nil, nil, err
		}
	}
	var dypV, dprobsV G.Value
	if dyp != nil {
		dypV = dyp
	}
	if dprobs != nil {
		dprobsV = dprobs
	}
	err = e.Kernels().UnpermuteBackward(dt, g, H, dptr(dypV), dptr(dprobsV), dptr(dy), dptr(yp), dptr(probs), dptr(plan))
	if err != nil {
		return nil, nil, err
	}
	return dypV, dprobsV, nil
}
