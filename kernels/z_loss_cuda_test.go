//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"
)

// The router z-loss on the GPU against its CPU twin (z_loss.go): the loss and its gradient
// within a float32 ulp (float32) or a few float64 ulps (float64), since CUDA's exp and log are
// not Go's. The output gradient comes from the host (dyv) and from the device (a one-element
// tensor).

func loClose[F float32 | float64](t *testing.T, what string, got, want []F, rel float64) {
	t.Helper()
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if d := math.Abs(g - w); !(d <= rel*math.Abs(w)) && !(math.IsNaN(g) && math.IsNaN(w)) && g != w {
			t.Fatalf("%s[%d] = %v, want %v (rel diff %g > %g)", what, i, got[i], want[i], d/math.Abs(w), rel)
		}
	}
}

func loZ[F float32 | float64](t *testing.T, T, E int, x []F, dyv float64, rel float64) {
	d := loDType[F]()
	size := int64(4)
	if d == F64 {
		size = 8
	}
	scale := 0.001 / float64(T)
	want, err := ZLossForward(x, T, E, scale)
	cuMust(t, err)
	wantG := make([]F, T*E)
	cuMust(t, ZLossBackward(wantG, x, T, E, scale, dyv))

	bx := cuUpload(t, x)
	work := cuAlloc(t, ZLossWorkBytes(T))
	out := cuAlloc(t, size)
	cuMust(t, testCUDA.ZLossForward(d, out.p, bx.p, work.p, T, E, scale))
	got := cuDownload[F](t, out, 1)
	loClose(t, "z-loss", got, []F{want}, rel)
	cuMust(t, testCUDA.ZLossForward(d, out.p, bx.p, work.p, T, E, scale))
	loBits(t, "z-loss (second run)", cuDownload[F](t, out, 1), got)

	dx := cuAlloc(t, size*int64(T*E))
	cuMust(t, testCUDA.ZLossBackward(d, dx.p, bx.p, 0, T, E, scale, dyv))
	gotG := cuDownload[F](t, dx, T*E)
	loClose(t, "dlogits (host dy)", gotG, wantG, rel)
	dy := cuUpload(t, []F{F(dyv)})
	cuMust(t, testCUDA.ZLossBackward(d, dx.p, bx.p, dy.p, T, E, scale, math.NaN()))
	loBits(t, "dlogits (device dy)", cuDownload[F](t, dx, T*E), gotG)
	cuMust(t, testCUDA.Status())
}

func TestCUDAZLoss(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range loCases {
		t.Run(c.name, func(t *testing.T) {
			x := loRand(rng, c.T*c.E, 3)
			if c.E > 1 {
				x[c.E+1] = math.Inf(-1) // a masked logit in row 1
			}
			// float32: the float64 results agree within a few ulps, then round once: at most
			// one float32 ulp apart. float64: a few ulps (exp and log, sums in other orders).
			loZ(t, c.T, c.E, loF32(x), float64(float32(0.75)), 1.2e-7)
			loZ(t, c.T, c.E, x, 0.75, 1e-13)
		})
	}
}

// TestCUDAZLossArgs checks the launchers' errors.
func TestCUDAZLossArgs(t *testing.T) {
	var p cu.DevicePtr = 0
	for _, err := range []error{
		testCUDA.ZLossForward(BF16, p, p, p, 4, 2, 1),
		testCUDA.ZLossBackward(F64, p, p, p, 4, 0, 1, 1),
	} {
		if err == nil {
			t.Errorf("bad arguments gave no error")
		}
	}
}

// TestCUDAZLossNaNRows: a row holding a NaN has a NaN log-sum-exp on the GPU as on the CPU,
// also beside +Inf (fmax skips a NaN: the device used to give +Inf for a row of NaN and +Inf
// where the CPU gives NaN); a row of +Inf without NaN stays infinite.
func TestCUDAZLossNaNRows(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, row := range [][]float64{{nan, inf}, {inf, nan}, {nan, 1}, {math.Inf(-1), nan}, {1, inf}, {2, 1}} {
		loZ(t, 1, 2, loF32(row), float64(float32(0.75)), 1.2e-7)
		loZ(t, 1, 2, row, 0.75, 1e-13)
	}
}

// TestCUDAZLossLargeLogits: the gradient of rows with large logits, as on the CPU
// (TestZLossLargeLogits: the softmax from the row maximum, not from the rounded lse).
func TestCUDAZLossLargeLogits(t *testing.T) {
	for _, row := range [][]float64{{1e30, 1e30}, {1e16, 1e16 + 4}, {-1e20, -1e20}, {3e38, 3e38}} {
		loZ(t, 1, 2, loF32(row), float64(float32(0.75)), 1.2e-7)
		loZ(t, 1, 2, row, 0.75, 1e-13)
	}
}
