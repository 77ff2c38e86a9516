//go:build gomoecuda

package kernels_test

import (
	"math"
	"testing"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"
)

// TestCUDAManyRowsGetTheirThreads: the kernels that run one thread or one warp per row (or
// column, or token) and return past the end, with no grid-stride loop, compute every item past
// the 2^20 blocks at which grid-stride launches cap their grid: rows past 2^23 of the row ops and
// RowDot, tokens past 2^27 of TopK and 2^28 of TopK's gather gradient, columns past 2^28 of
// ColSum. Under the cap those items were never written (the outputs kept the 0xA5 fill). Each
// case checks the last items.
func TestCUDAManyRowsGetTheirThreads(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates up to 3 GiB")
	}
	const tail = 1000
	fill := func(t *testing.T, b cuDevBuf, f float32) {
		t.Helper()
		cuMust(t, testCUDA.Do(func() error { return cu.MemsetD32(b.p, math.Float32bits(f), b.n/4) }))
	}
	last := func(t *testing.T, what string, b cuDevBuf, n int64, want float32) {
		t.Helper()
		got := cuDownload[float32](t, cuDevBuf{b.p + cu.DevicePtr(4*(n-tail)), 4 * tail}, tail)
		for i, v := range got {
			if v != want {
				t.Fatalf("%s: item %d of %d is %v (bits %#x), want %v", what, n-tail+int64(i), n, v, math.Float32bits(v), want)
			}
		}
	}
	t.Run("rows", func(t *testing.T) {
		const rows = 1<<23 + tail
		x, y, dy, out := cuAlloc(t, 4*rows), cuAlloc(t, 4*rows), cuAlloc(t, 4*rows), cuAlloc(t, 4*rows)
		fill(t, x, 2)
		cuMust(t, testCUDA.RowForward(F32, RowSoftmax, y.p, x.p, rows, 1))
		last(t, "RowForward softmax", y, rows, 1)
		fill(t, dy, 3)
		cuMust(t, testCUDA.RowBackward(F32, RowSoftmax, out.p, x.p, y.p, dy.p, rows, 1)) // 1·(3 − 3·1)
		last(t, "RowBackward softmax", out, rows, 0)
		cuMust(t, testCUDA.RowDot(F32, out.p, x.p, dy.p, rows, 1))
		last(t, "RowDot", out, rows, 6)
	})
	t.Run("TopK", func(t *testing.T) {
		const T = 1<<27 + tail
		scores, ids := cuAlloc(t, 4*T), cuAlloc(t, 4*T)
		fill(t, scores, 1)
		cuMust(t, testCUDA.TopK(F32, ids.p, scores.p, 0, T, 1, 1, 1, 1))
		last(t, "TopK ids (as bits)", ids, T, 0)
	})
	t.Run("GatherTopKBackward", func(t *testing.T) {
		const T = 1<<28 + tail
		g, ids, ds := cuAlloc(t, 4*T), cuAlloc(t, 4*T), cuAlloc(t, 4*T)
		fill(t, g, 5)
		fill(t, ids, 0)
		cuMust(t, testCUDA.GatherTopKBackward(F32, ds.p, g.p, ids.p, T, 1, 1))
		last(t, "GatherTopKBackward", ds, T, 5)
	})
	t.Run("ColSum", func(t *testing.T) {
		const cols = 1<<28 + tail
		x, out := cuAlloc(t, 4*cols), cuAlloc(t, 4*cols)
		fill(t, x, 7)
		cuMust(t, testCUDA.ColSum(F32, out.p, x.p, 1, cols))
		last(t, "ColSum", out, cols, 7)
	})
	cuMust(t, testCUDA.Status())
}
