//go:build gomoecuda

package kernels_test

import (
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// ReLU and its gradient on the GPU against their CPU twins (relu.go), bit for bit.

func reluGPU[F float32 | float64](t *testing.T, c nnCase[F], rel float64) {
	d, n, x, dy, dx, dX, dDY := c.d, c.n, c.x, c.dy, c.dx, c.dX, c.dDY
	want := make([]F, n)
	cuMust(t, ReLU(want, x))
	cuMust(t, testCUDA.ReLU(d, dx.p, dX.p, int64(n)))
	nnExact(t, "ReLU", cuDownload[F](t, dx, n), want)
	cuMust(t, ReLUBackward(want, x, dy))
	cuMust(t, testCUDA.ReLUBackward(d, dx.p, dX.p, dDY.p, int64(n)))
	nnExact(t, "ReLUBackward", cuDownload[F](t, dx, n), want)
	cuMust(t, testCUDA.Status())
}

func TestCUDAReLU(t *testing.T) { nnRun(t, reluGPU[float32], reluGPU[float64]) }
