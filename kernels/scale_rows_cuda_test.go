//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"

	"github.com/gomoe/gomoe/bfloat16"
)

// The GPU kernels against their CPU twins: row scaling and its row-dot gradient.

func TestCUDAScaleRowsRowDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const rows, cols = 37, 70
	x, s := f32s(trRand(rng, rows*cols, 1)), f32s(trRand(rng, rows, 1))
	y := make([]float32, rows*cols)
	cuMust(t, ScaleRows(y, x, s, cols))
	d := make([]float32, rows)
	cuMust(t, RowDot(d, y, x, cols))
	bx, bs := cuUpload(t, x), cuUpload(t, s)
	by := cuAlloc(t, 4*rows*cols)
	cuMust(t, testCUDA.ScaleRows(F32, by.p, bx.p, bs.p, rows, cols))
	gy := cuDownload[float32](t, by, rows*cols)
	for i := range y {
		if math.Float32bits(gy[i]) != math.Float32bits(y[i]) {
			t.Fatalf("ScaleRows [%d]: GPU %v, CPU %v", i, gy[i], y[i])
		}
	}
	bd := cuAlloc(t, 4*rows)
	cuMust(t, testCUDA.RowDot(F32, bd.p, by.p, bx.p, rows, cols))
	trClose(t, "RowDot", asF64(cuDownload[float32](t, bd, rows)), asF64(d), 1e-5, 1e-6)
	// bfloat16 data with float32 factors: products in float32, rounded once.
	xb := make([]bfloat16.BFloat16, rows*cols)
	cuMust(t, bfloat16.FromFloat32s(xb, x))
	wide := make([]float32, rows*cols)
	cuMust(t, bfloat16.ToFloat32s(wide, xb))
	cuMust(t, ScaleRows(y, wide, s, cols))
	want := make([]bfloat16.BFloat16, rows*cols)
	cuMust(t, bfloat16.FromFloat32s(want, y))
	bxb := cuUpload(t, xb)
	byb := cuAlloc(t, 2*rows*cols)
	cuMust(t, testCUDA.ScaleRows(BF16, byb.p, bxb.p, bs.p, rows, cols))
	got := cuDownload[bfloat16.BFloat16](t, byb, rows*cols)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ScaleRows bf16 [%d]: GPU %v, CPU %v", i, got[i], want[i])
		}
	}
}
