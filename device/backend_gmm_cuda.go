//go:build gomoecuda

package device

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// The grouped matmul on the GPU: one cuBLAS GEMM per expert segment (or one grouped GEMM),
// see kernels.CUDA.GroupedMatMulForward. Each call reads the plan's offsets to the host with
// one small synchronous copy; everything else is enqueued without waiting.

// gmmDevice checks the dtypes and shapes of a grouped matmul's device inputs: rows [R, cols]
// and w [E,H,N] (w may be nil for the weights gradient), all of one float dtype, and the plan.
func gmmDevice(g kernels.Geometry, rowsWhat string, rows, w, plan G.Value, vs ...G.Value) (*Engine, kernels.DType, error) {
	e, err := devOf(append([]G.Value{rows, w, plan}, vs...)...)
	if err != nil {
		return nil, 0, err
	}
	if err := g.Validate(); err != nil {
		return nil, 0, err
	}
	dt, err := DType(rows.Dtype())
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", rowsWhat, err)
	}
	for _, v := range append([]G.Value{w}, vs...) {
		if v != nil && v.Dtype() != rows.Dtype() {
			return nil, 0, fmt.Errorf("%s has dtype %v but another input has %v", rowsWhat, rows.Dtype(), v.Dtype())
		}
	}
	if plan.Dtype() != tensor.Int32 {
		return nil, 0, fmt.Errorf("plan has dtype %v, want int32", plan.Dtype())
	}
	if err := checkSize("plan", plan, g.PlanLen()); err != nil {
		return nil, 0, err
	}
	return e, dt, nil
}

// gmmWeight checks w [E,H,N] and returns H and N.
func gmmWeight(g kernels.Geometry, w G.Value) (H, N int, err error) {
	s := w.Shape()
	if len(s) != 3 || s[0] != g.E || s[1] < 1 || s[2] < 1 {
		return 0, 0, fmt.Errorf("w has shape %v, want [E=%d,H,N]", s, g.E)
	}
	return s[1], s[2], contiguous("w", w)
}

// gmmRows checks a [R, cols] value.
func gmmRows(g kernels.Geometry, what string, v G.Value, cols int) error {
	s := v.Shape()
	if len(s) != 2 || s[0] != g.Rows() || s[1] != cols {
		return fmt.Errorf("%s has shape %v, want [R=%d,%d]", what, s, g.Rows(), cols)
	}
	return contiguous(what, v)
}

func (cudaBackend) GroupedMatMul(g kernels.Geometry, xp, w, plan G.Value) (G.Value, error) {
	e, dt, err := gmmDevice(g, "xp", xp, w, plan)
	if err != nil {
		return nil, err
	}
	H, N, err := gmmWeight(g, w)
	if err != nil {
		return nil, err
	}
	if err := gmmRows(g, "xp", xp, H); err != nil {
		return nil, err
	}
	z, err := e.NewStepTensor(xp.Dtype(), g.Rows(), N)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().GroupedMatMulForward(dt, g, H, N, dptr(z), dptr(xp), dptr(w), dptr(plan)); err != nil {
		return nil, err
	}
	return z, nil
}

func (cudaBackend) GroupedMatMulRowsGrad(g kernels.Geometry, dz, w, plan G.Value) (G.Value, error) {
	e, dt, err := gmmDevice(g, "dz", dz, w, plan)
	if err != nil {
		return nil, err
	}
	H, N, err := gmmWeight(g, w)
	if err != nil {
		return nil, err
	}
	if err := gmmRows(g, "dz", dz, N); err != nil {
		return nil, err
	}
	dxp, err := e.NewStepTensor(dz.Dtype(), g.Rows(), H)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().GroupedMatMulBackwardRows(dt, g, H, N, dptr(dxp), dptr(dz), dptr(w), dptr(plan), false); err != nil {
		return nil, err
	}
	return dxp, nil
}

func (cudaBackend) GroupedMatMulWeightsGrad(g kernels.Geometry, xp, dz, plan G.Value, H int) (G.Value, error) {
	e, dt, err := gmmDevice(g, "xp", xp, nil, plan, dz)
	if err != nil {
		return nil, err
	}
	if err := gmmRows(g, "xp", xp, H); err != nil {
		return nil, err
	}
	s := dz.Shape()
	if len(s) != 2 || s[0] != g.Rows() || s[1] < 1 {
		return nil, fmt.Errorf("dz has shape %v, want [R=%d,N]", s, g.Rows())
	}
	N := s[1]
	if err := contiguous("dz", dz); err != nil {
		return nil, err
	}
	dw, err := e.NewStepTensor(xp.Dtype(), g.E, H, N)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().GroupedMatMulBackwardWeights(dt, g, H, N, dptr(dw), dptr(xp), dptr(dz), dptr(plan), false); err != nil {
		return nil, err
	}
	return dw, nil
}
