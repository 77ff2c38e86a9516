//go:build gomoecuda

package kernels_test

import (
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The embedding lookup and its gradient on the GPU against their CPU twins (embedding.go), bit
// for bit, and a bad id.

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
	if !statusHas(err, StatusBadIndex) {
		t.Fatalf("Status() = %v, want StatusBadIndex", err)
	}
	if got := cuDownload[float32](t, out, 4); got[0] != 3 || got[1] != 4 || got[2] != 0 || got[3] != 0 {
		t.Errorf("Embedding with a bad id = %v, want [3 4 0 0]", got)
	}
}
