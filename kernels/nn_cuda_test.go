//go:build gomoecuda

package kernels_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The nn kernels on the GPU against their CPU twins (nn.go): bias add, ReLU and the column
// sums bit for bit; RMSNorm and the cross-entropy within a few ulps of the element type
// (warp sums in float for float32, CUDA's expf/logf).

func nnConv[F float32 | float64](v []float64) []F {
	o := make([]F, len(v))
	for i, x := range v {
		o[i] = F(x)
	}
	return o
}

func nnGPU[F float32 | float64](t *testing.T, d DType, rows, cols int, rel float64) {
	rng := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
	n := rows * cols
	size := int64(4)
	if d == F64 {
		size = 8
	}
	x := nnConv[F](trRand(rng, n, 2))
	dy := nnConv[F](trRand(rng, n, 1))
	b := nnConv[F](trRand(rng, cols, 1))
	tgt := make([]F, n)
	for r := 0; r < rows; r++ {
		tgt[r*cols+rng.IntN(cols)] = 1
	}
	dx, dX, dDY, dB, dT := cuAlloc(t, size*int64(n)), cuUpload(t, x), cuUpload(t, dy), cuUpload(t, b), cuUpload(t, tgt)
	dCol := cuAlloc(t, size*int64(cols))
	scratch := cuAlloc(t, 8*int64(rows))
	R := int64(rows)
	exact := func(what string, got, want []F) {
		t.Helper()
		for i := range want {
			if got[i] != want[i] && !(got[i] != got[i] && want[i] != want[i]) {
				t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
			}
		}
	}

	want := make([]F, n)
	cuMust(t, BiasAdd(want, x, b))
	cuMust(t, testCUDA.BiasAdd(d, dx.p, dX.p, dB.p, R, cols))
	exact("BiasAdd", cuDownload[F](t, dx, n), want)

	wc := make([]F, cols)
	cuMust(t, ColSum(wc, dy))
	cuMust(t, testCUDA.ColSum(d, dCol.p, dDY.p, R, cols))
	exact("ColSum", cuDownload[F](t, dCol, cols), wc)

	cuMust(t, ReLU(want, x))
	cuMust(t, testCUDA.ReLU(d, dx.p, dX.p, int64(n)))
	exact("ReLU", cuDownload[F](t, dx, n), want)
	cuMust(t, ReLUBackward(want, x, dy))
	cuMust(t, testCUDA.ReLUBackward(d, dx.p, dX.p, dDY.p, int64(n)))
	exact("ReLUBackward", cuDownload[F](t, dx, n), want)

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

func TestCUDANN(t *testing.T) {
	for _, s := range [][2]int{{1, 3}, {7, 10}, {333, 10}, {128, 129}, {1000, 65}} {
		t.Run(fmt.Sprintf("f32 %dx%d", s[0], s[1]), func(t *testing.T) { nnGPU[float32](t, F32, s[0], s[1], 2e-5) })
		t.Run(fmt.Sprintf("f64 %dx%d", s[0], s[1]), func(t *testing.T) { nnGPU[float64](t, F64, s[0], s[1], 1e-12) })
	}
}

func TestCUDANNBadInput(t *testing.T) {
	if err := testCUDA.BiasAdd(BF16, 0, 0, 0, 1, 1); err == nil {
		t.Error("BiasAdd accepted bfloat16")
	}
	if err := testCUDA.RMSNorm(F32, 0, 0, 0, 0, 4, 1e-6); err == nil {
		t.Error("RMSNorm accepted 0 rows")
	}
	if err := testCUDA.CrossEntropy(F32, 0, 0, 0, 0, 4, 0); err == nil {
		t.Error("CrossEntropy accepted 0 columns")
	}
}

func nnEmbedGPU[F float32 | float64](t *testing.T, d DType, V, D, N int) {
	rng := rand.New(rand.NewPCG(uint64(V), uint64(N)))
	size := int64(4)
	if d == F64 {
		size = 8
	}
	table := nnConv[F](trRand(rng, V*D, 1))
	dy := nnConv[F](trRand(rng, N*D, 1))
	ids := make([]int32, N)
	for i := range ids {
		ids[i] = int32(rng.IntN(V))
	}
	want := make([]F, N*D)
	cuMust(t, Embedding(want, table, ids, D))
	dT, dDY, dIDs := cuUpload(t, table), cuUpload(t, dy), cuUpload(t, ids)
	out, dtab := cuAlloc(t, size*int64(N*D)), cuAlloc(t, size*int64(V*D))
	cuMust(t, testCUDA.Embedding(d, out.p, dT.p, dIDs.p, int64(N), V, D))
	got := cuDownload[F](t, out, N*D)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("Embedding[%d] = %v, want %v", i, got[i], want[i])
		}
	}
	wt := make([]F, V*D)
	cuMust(t, EmbeddingBackward(wt, dy, ids, D))
	cuMust(t, testCUDA.EmbeddingBackward(d, dtab.p, dDY.p, dIDs.p, int64(N), V, D))
	gt := cuDownload[F](t, dtab, V*D)
	for i := range wt {
		if gt[i] != wt[i] {
			t.Fatalf("EmbeddingBackward[%d] = %v, want %v (bit for bit)", i, gt[i], wt[i])
		}
	}
	cuMust(t, testCUDA.Status())
}

func TestCUDAEmbedding(t *testing.T) {
	nnEmbedGPU[float32](t, F32, 97, 32, 2048)
	nnEmbedGPU[float64](t, F64, 5, 3, 40)
	// A bad id: a zero row and StatusBadIndex.
	table := cuUpload(t, []float32{1, 2, 3, 4})
	ids := cuUpload(t, []int32{1, 2})
	out := cuAlloc(t, 16)
	cuMust(t, testCUDA.Embedding(F32, out.p, table.p, ids.p, 2, 2, 2))
	err := testCUDA.Status()
	var se StatusError
	if !errors.As(err, &se) || int32(se)&StatusBadIndex == 0 {
		t.Fatalf("Status() = %v, want StatusBadIndex", err)
	}
	if got := cuDownload[float32](t, out, 4); got[0] != 3 || got[1] != 4 || got[2] != 0 || got[3] != 0 {
		t.Errorf("Embedding with a bad id = %v, want [3 4 0 0]", got)
	}
}
