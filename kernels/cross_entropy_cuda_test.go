//go:build gomoecuda

package kernels_test

import (
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The softmax cross-entropy and its gradient on the GPU against their CPU twins
// (cross_entropy.go), within a few ulps of the element type (warp sums in float for float32,
// CUDA's expf/logf).

func ceGPU[F float32 | float64](t *testing.T, c nnCase[F], rel float64) {
	d, rows, cols, n, R, x, tgt := c.d, c.rows, c.cols, c.n, c.R, c.x, c.tgt
	dx, dX, dT, dCol, scratch := c.dx, c.dX, c.dT, c.dCol, c.scratch
	want := make([]F, n)
	loss, err := CrossEntropy(x, tgt, cols)
	cuMust(t, err)
	cuMust(t, testCUDA.CrossEntropy(d, dCol.p, dX.p, dT.p, scratch.p, R, cols))
	trClose(t, "CrossEntropy", asF64(cuDownload[F](t, dCol, 1)), []float64{float64(F(loss))}, rel, rel)
	// The loss gradient on the host (dy pointer 0) and on the device (one element).
	scale := 0.75 / float64(rows)
	cuMust(t, CrossEntropyBackward(want, x, tgt, cols, scale))
	cuMust(t, testCUDA.CrossEntropyBackward(d, dx.p, dX.p, dT.p, 0, scale, R, cols))
	trClose(t, "CrossEntropyBackward host dy", asF64(cuDownload[F](t, dx, n)), asF64(want), rel, rel/float64(rows))
	g := cuUpload(t, []F{0.75})
	cuMust(t, testCUDA.CrossEntropyBackward(d, dx.p, dX.p, dT.p, g.p, 1/float64(rows), R, cols))
	trClose(t, "CrossEntropyBackward device dy", asF64(cuDownload[F](t, dx, n)), asF64(want), rel, rel/float64(rows))
	cuMust(t, testCUDA.Status())
}

func TestCUDACrossEntropy(t *testing.T) { nnRun(t, ceGPU[float32], ceGPU[float64]) }

func TestCUDACrossEntropyBadInput(t *testing.T) {
	if err := testCUDA.CrossEntropy(F32, 0, 0, 0, 0, 4, 0); err == nil {
		t.Error("CrossEntropy accepted 0 columns")
	}
}
