//go:build gomoecuda

package kernels_test

import (
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The GPU kernels against their CPU twins: the top-k gather and its gradient.

func TestCUDAGatherTopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	const T, E, K = 50, 16, 3
	s := trRand(rng, T*E, 1)
	g := trRand(rng, T*K, 1)
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		p := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(p[k])
		}
	}
	ids[4] = -1
	ids0 := append([]int32(nil), ids...)
	want := make([]float64, T*K)
	wantDS := make([]float64, T*E)
	for i, e := range ids {
		if e >= 0 {
			want[i] = s[(i/K)*E+int(e)]
			wantDS[(i/K)*E+int(e)] = g[i]
		}
	}
	bs, bi, bg := cuUpload(t, s), cuUpload(t, ids), cuUpload(t, g)
	out := cuAlloc(t, 8*T*K)
	cuMust(t, testCUDA.GatherTopK(F64, out.p, bs.p, bi.p, T, E, K))
	trClose(t, "gather", cuDownload[float64](t, out, T*K), want, 0, 0)
	ds := cuAlloc(t, 8*T*E)
	cuMust(t, testCUDA.GatherTopKBackward(F64, ds.p, bg.p, bi.p, T, E, K))
	trClose(t, "gather grad", cuDownload[float64](t, ds, T*E), wantDS, 0, 0)
	cuMust(t, testCUDA.Status())
	// An id outside [-1, E) reads and writes nothing outside the buffers and is flagged, by
	// the gather and by its gradient alone.
	for _, bad := range []int32{E, -2, -1 << 30} {
		ids[7] = bad
		bi = cuUpload(t, ids)
		cuMust(t, testCUDA.GatherTopK(F64, out.p, bs.p, bi.p, T, E, K))
		if err := testCUDA.Status(); !statusHas(err, StatusBadID) {
			t.Errorf("gather, id %d: status %v, want StatusBadID", bad, err)
		}
		if got := cuDownload[float64](t, out, T*K)[7]; got != 0 {
			t.Errorf("id %d gathered %v, want 0", bad, got)
		}
		cuMust(t, testCUDA.GatherTopKBackward(F64, ds.p, bg.p, bi.p, T, E, K))
		if err := testCUDA.Status(); !statusHas(err, StatusBadID) {
			t.Errorf("gather gradient, id %d: status %v, want StatusBadID", bad, err)
		}
		wantDS[(7/K)*E+int(ids0[7])] = 0
		trClose(t, "gather grad", cuDownload[float64](t, ds, T*E), wantDS, 0, 0)
		wantDS[(7/K)*E+int(ids0[7])] = g[7]
	}
}
