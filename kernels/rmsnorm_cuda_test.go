//go:build gomoecuda

package kernels_test

import (
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// RMSNorm and its gradients on the GPU against their CPU twins (rmsnorm.go), within a few ulps
// of the element type (warp sums in float for float32).

func rmsGPU[F float32 | float64](t *testing.T, c nnCase[F], rel float64) {
	d, rows, cols, n, R, x, dy, b := c.d, c.rows, c.cols, c.n, c.R, c.x, c.dy, c.b
	dx, dX, dDY, dB, dCol, scratch := c.dx, c.dX, c.dDY, c.dB, c.dCol, c.scratch
	want, wc := make([]F, n), make([]F, cols)
	const eps = 1e-6
	cuMust(t, RMSNorm(want, x, b, eps))
	cuMust(t, testCUDA.RMSNorm(d, dx.p, dX.p, dB.p, R, cols, eps))
	trClose(t, "RMSNorm", asF64(cuDownload[F](t, dx, n)), asF64(want), rel, rel)
	cuMust(t, RMSNormBackward(want, x, b, dy, eps))
	cuMust(t, testCUDA.RMSNormBackward(d, dx.p, dX.p, dB.p, dDY.p, R, cols, eps))
	trClose(t, "RMSNormBackward", asF64(cuDownload[F](t, dx, n)), asF64(want), rel, rel)
	cuMust(t, RMSNormGainGrad(wc, x, dy, eps))
	cuMust(t, testCUDA.RMSNormGainGrad(d, dCol.p, dX.p, dDY.p, scratch.p, R, cols, eps))
	trClose(t, "RMSNormGainGrad", asF64(cuDownload[F](t, dCol, cols)), asF64(wc), rel, rel*float64(rows))
	cuMust(t, testCUDA.Status())
}

func TestCUDARMSNorm(t *testing.T) { nnRun(t, rmsGPU[float32], rmsGPU[float64]) }

func TestCUDARMSNormBadInput(t *testing.T) {
	if err := testCUDA.RMSNorm(F32, 0, 0, 0, 0, 4, 1e-6); err == nil {
		t.Error("RMSNorm accepted 0 rows")
	}
}
