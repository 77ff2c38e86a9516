//go:build gomoecuda

package kernels_test

import (
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The bias add and its column sum on the GPU against their CPU twins (bias.go), bit for bit.

func biasGPU[F float32 | float64](t *testing.T, c nnCase[F], rel float64) {
	d, n, cols, R, x, dy, b := c.d, c.n, c.cols, c.R, c.x, c.dy, c.b
	dx, dX, dDY, dB, dCol := c.dx, c.dX, c.dDY, c.dB, c.dCol
	want := make([]F, n)
	cuMust(t, BiasAdd(want, x, b))
	cuMust(t, testCUDA.BiasAdd(d, dx.p, dX.p, dB.p, R, cols))
	nnExact(t, "BiasAdd", cuDownload[F](t, dx, n), want)

	wc := make([]F, cols)
	cuMust(t, ColSum(wc, dy))
	cuMust(t, testCUDA.ColSum(d, dCol.p, dDY.p, R, cols))
	nnExact(t, "ColSum", cuDownload[F](t, dCol, cols), wc)
	cuMust(t, testCUDA.Status())
}

func TestCUDABias(t *testing.T) { nnRun(t, biasGPU[float32], biasGPU[float64]) }

func TestCUDABiasBadInput(t *testing.T) {
	if err := testCUDA.BiasAdd(BF16, 0, 0, 0, 1, 1); err == nil {
		t.Error("BiasAdd accepted bfloat16")
	}
}
