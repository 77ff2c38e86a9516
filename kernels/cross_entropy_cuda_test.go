//go:build gomoecuda

package kernels_test

import (
	"math"
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

// TestCUDACrossEntropyNegInfLogit: as on the CPU, a class whose logit is −Inf and whose target
// is 0 adds nothing to the loss (it was NaN: 0·−Inf), and its gradient is 0.
func TestCUDACrossEntropyNegInfLogit(t *testing.T) {
	t.Run("float32", ceNegInfLogit[float32])
	t.Run("float64", ceNegInfLogit[float64])
}

func ceNegInfLogit[F float32 | float64](t *testing.T) {
	d := loDType[F]()
	ninf, ln3 := F(math.Inf(-1)), F(math.Log(3))
	x := []F{0, ln3, ninf, ninf, 1, ln3}
	tgt := []F{1, 0, 0, 0, 0, 1}
	want, err := CrossEntropy(x, tgt, 3)
	cuMust(t, err)
	if math.IsNaN(want) || math.IsInf(want, 0) {
		t.Fatalf("CPU loss %v, want a finite one", want)
	}
	size := int64(d.Size())
	dX, dT := cuUpload(t, x), cuUpload(t, tgt)
	out, scratch, dx := cuAlloc(t, size), cuAlloc(t, 2*8), cuAlloc(t, 6*size)
	cuMust(t, testCUDA.CrossEntropy(d, out.p, dX.p, dT.p, scratch.p, 2, 3))
	trClose(t, "CrossEntropy", asF64(cuDownload[F](t, out, 1)), []float64{float64(F(want))}, 1e-6, 1e-6)
	wantDx := make([]F, 6)
	cuMust(t, CrossEntropyBackward(wantDx, x, tgt, 3, 0.5))
	cuMust(t, testCUDA.CrossEntropyBackward(d, dx.p, dX.p, dT.p, 0, 0.5, 2, 3))
	trClose(t, "CrossEntropyBackward", asF64(cuDownload[F](t, dx, 6)), asF64(wantDx), 1e-6, 1e-6)
	cuMust(t, testCUDA.Status())
}

// TestCUDACrossEntropyLargeLogits: the loss of rows with large logits keeps its digits, as on
// the CPU (m + log s − ⟨x, t⟩ in float32 lost up to ulp(m): 0.0078 at 10⁵): rows [a, a+d] with
// the target on the first give log(1 + e^d).
func TestCUDACrossEntropyLargeLogits(t *testing.T) {
	t.Run("float32", ceLargeLogits[float32])
	t.Run("float64", ceLargeLogits[float64])
}

func ceLargeLogits[F float32 | float64](t *testing.T) {
	d := loDType[F]()
	x := []F{1e5, 1e5 + 1, -3e4, -3e4 + 0.5, 1e30, 1e30}
	tgt := []F{1, 0, 1, 0, 1, 0}
	var want float64
	for r := 0; r < 3; r++ {
		gap := float64(x[2*r+1]) - float64(x[2*r])
		want += math.Log1p(math.Exp(gap)) / 3
	}
	size := int64(d.Size())
	dX, dT := cuUpload(t, x), cuUpload(t, tgt)
	out, scratch := cuAlloc(t, size), cuAlloc(t, 3*8)
	cuMust(t, testCUDA.CrossEntropy(d, out.p, dX.p, dT.p, scratch.p, 3, 2))
	trClose(t, "CrossEntropy", asF64(cuDownload[F](t, out, 1)), []float64{float64(F(want))}, 1e-6, 1e-6)
	cpu, err := CrossEntropy(x, tgt, 2)
	cuMust(t, err)
	trClose(t, "CrossEntropy (CPU)", []float64{cpu}, []float64{want}, 1e-15, 1e-15)
	cuMust(t, testCUDA.Status())
}
