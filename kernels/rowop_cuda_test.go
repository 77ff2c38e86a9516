//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The GPU kernels against their CPU twins: the row ops within a few ulps.

func TestCUDARowOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, cols := range []int{1, 7, 32, 128, 300} {
		rows := 37
		n := rows * cols
		x, dy := trRand(rng, n, 4), trRand(rng, n, 1)
		for _, kind := range []RowOp{RowSoftmax, RowNormalize} {
			if kind == RowNormalize {
				for i := range x {
					x[i] = 0.1 + math.Abs(x[i])
				}
			}
			y := make([]float64, n)
			cuMust(t, RowForward(kind, y, x, cols))
			dx := make([]float64, n)
			cuMust(t, RowBackward(kind, dx, x, y, dy, cols))
			// float64
			bx, by, bdy := cuUpload(t, x), cuUpload(t, y), cuUpload(t, dy)
			out := cuAlloc(t, 8*int64(n))
			cuMust(t, testCUDA.RowForward(F64, kind, out.p, bx.p, int64(rows), cols))
			trClose(t, kind.String()+" f64 fwd", cuDownload[float64](t, out, n), y, 1e-13, 1e-16)
			cuMust(t, testCUDA.RowBackward(F64, kind, out.p, bx.p, by.p, bdy.p, int64(rows), cols))
			trClose(t, kind.String()+" f64 bwd", cuDownload[float64](t, out, n), dx, 1e-11, 1e-14)
			// float32
			X, DY := f32s(x), f32s(dy)
			Y := make([]float32, n)
			cuMust(t, RowForward(kind, Y, X, cols))
			DX := make([]float32, n)
			cuMust(t, RowBackward(kind, DX, X, Y, DY, cols))
			bX, bY, bDY := cuUpload(t, X), cuUpload(t, Y), cuUpload(t, DY)
			o32 := cuAlloc(t, 4*int64(n))
			cuMust(t, testCUDA.RowForward(F32, kind, o32.p, bX.p, int64(rows), cols))
			trClose(t, kind.String()+" f32 fwd", asF64(cuDownload[float32](t, o32, n)), asF64(Y), 1e-5, 1e-7)
			cuMust(t, testCUDA.RowBackward(F32, kind, o32.p, bX.p, bY.p, bDY.p, int64(rows), cols))
			trClose(t, kind.String()+" f32 bwd", asF64(cuDownload[float32](t, o32, n)), asF64(DX), 1e-4, 1e-6)
		}
	}
}
