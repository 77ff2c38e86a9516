//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// sumReduceRef is SumReduce's order written out: 256 per-thread sums of rows x, x+256, ...,
// the xor butterfly within each warp of 32, then the 8 warp sums in order.
func sumReduceRef(rows []float64) float64 {
	var th [256]float64
	for i, v := range rows {
		th[i%256] += v
	}
	var t float64
	for w := 0; w < 8; w++ {
		lanes := append([]float64(nil), th[w*32:(w+1)*32]...)
		for o := 16; o > 0; o >>= 1 {
			next := make([]float64, 32)
			for l := range lanes {
				next[l] = lanes[l] + lanes[l^o]
			}
			lanes = next
		}
		t += lanes[0]
	}
	return t
}

// TestCUDAGradNormKernels: SumReduce gives its documented order's bits for float32 and
// float64 row sums; ClipFinish gives the host's norm and scale (IEEE sqrt and division), no
// clipping for a max norm of 0, and a skip flag with StatusBadNorm for an infinite norm; ScaleBy equals Binary's multiply by the
// same scale, and leaves a gradient alone for a scale of 1 or more.
func TestCUDAGradNormKernels(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	k := testCUDA
	for _, n := range []int{1, 255, 256, 1000, 70001} {
		r := trRand(rng, n, 3)
		out := cuAlloc(t, 8)
		cuMust(t, k.SumReduce(F64, out.p, cuUpload(t, r).p, int64(n)))
		if got, want := cuDownload[float64](t, out, 1)[0], sumReduceRef(r); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("f64 n=%d: %v, want %v", n, got, want)
		}
		r32 := f32s(r)
		cuMust(t, k.SumReduce(F32, out.p, cuUpload(t, r32).p, int64(n)))
		if got, want := cuDownload[float64](t, out, 1)[0], sumReduceRef(asF64(r32)); math.Float64bits(got) != math.Float64bits(want) {
			t.Fatalf("f32 n=%d: %v, want %v", n, got, want)
		}
	}
	sums := []float64{3.5, 0.25, 11}
	st := cuUpload(t, []float64{9, 9, 9, 0.5})
	cuMust(t, k.ClipFinish(st.p, cuUpload(t, sums).p, 3))
	norm := math.Sqrt(3.5 + 0.25 + 11)
	got := cuDownload[float64](t, st, 4)
	if got[0] != 0 || math.Float64bits(got[1]) != math.Float64bits(norm) || math.Float64bits(got[2]) != math.Float64bits(0.5/(norm+1e-6)) {
		t.Fatalf("ClipFinish: %v, want [0 %v %v]", got, norm, 0.5/(norm+1e-6))
	}
	g := f32s(trRand(rng, 5000, 1))
	bg, bw := cuUpload(t, g), cuUpload(t, g)
	cuMust(t, k.ScaleBy(F32, bg.p, st.p, 5000))
	cuMust(t, k.Binary(F32, OpMul, bw.p, bw.p, 0, got[2], 5000))
	cuSameBits(t, "ScaleBy", cuDownload[float32](t, bg, 5000), cuDownload[float32](t, bw, 5000))
	cuMust(t, k.Status())
	// A scale of 1 or more changes nothing; an infinite norm skips, with the status bit.
	cuMust(t, k.ClipFinish(st.p, cuUpload(t, []float64{0.01}).p, 1))
	before := cuDownload[float32](t, bg, 5000)
	cuMust(t, k.ScaleBy(F32, bg.p, st.p, 5000))
	cuSameBits(t, "ScaleBy at scale >= 1", cuDownload[float32](t, bg, 5000), before)
	// A max norm of 0 (clipping turned off after the capture) clips nothing.
	off := cuUpload(t, []float64{9, 9, 9, 0})
	cuMust(t, k.ClipFinish(off.p, cuUpload(t, []float64{100}).p, 1))
	if got := cuDownload[float64](t, off, 4); got[0] != 0 || got[1] != 10 || got[2] != 1 {
		t.Fatalf("max norm 0: scalars %v, want skip 0, norm 10, scale 1", got)
	}
	cuMust(t, k.ClipFinish(st.p, cuUpload(t, []float64{1, math.Inf(1)}).p, 2))
	if got := cuDownload[float64](t, st, 4); got[0] != 1 || got[2] != 1 {
		t.Fatalf("infinite norm: scalars %v, want skip 1 and scale 1", got)
	}
	if err := k.Status(); err == nil || !statusHas(err, StatusBadNorm) {
		t.Fatalf("infinite norm: status %v, want StatusBadNorm", err)
	}
}

// sqRowsRef is sq_rows' order written out: lane l of the warp adds the squares of elements l,
// l+32, ... in float64, then the xor butterfly adds the lanes.
func sqRowsRef(row []float64) float64 {
	var lanes [32]float64
	for j, v := range row {
		lanes[j%32] += v * v
	}
	for o := 16; o > 0; o >>= 1 {
		var next [32]float64
		for l := range lanes {
			next[l] = lanes[l] + lanes[l^o]
		}
		lanes = next
	}
	return lanes[0]
}

// TestCUDASquareRows: SquareRows gives its documented order's bits for float32 and bfloat16
// rows (whose squares are exact in float64), also with elements of 3·10¹⁹ and 10³⁰, whose
// squares overflowed RowDot's float32 row sums (the gradient norm was +Inf on the GPU, finite
// on the CPU).
func TestCUDASquareRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	for _, c := range []struct{ rows, cols int }{{1, 1}, {3, 1024}, {2, 37}, {1, 1000}} {
		n := c.rows * c.cols
		v := trRand(rng, n, 1)
		v[0], v[n-1] = 3e19, -1e30
		for _, d := range []DType{F32, BF16} {
			x := cuElems(d, v)
			vals := cuToF64(cuWiden(x))
			out := cuAlloc(t, int64(8*c.rows))
			cuMust(t, testCUDA.SquareRows(d, out.p, cuUploadAny(t, x).p, int64(c.rows), c.cols))
			got := cuDownload[float64](t, out, c.rows)
			for r := range got {
				want := sqRowsRef(vals[r*c.cols : (r+1)*c.cols])
				if math.IsInf(want, 0) || math.Float64bits(got[r]) != math.Float64bits(want) {
					t.Fatalf("%v %d×%d row %d: %v, want %v (finite)", d, c.rows, c.cols, r, got[r], want)
				}
			}
		}
	}
	if err := testCUDA.SquareRows(F64, 0, 0, 1, 1); err == nil {
		t.Error("SquareRows took float64 (RowDot's)")
	}
	// Rows wider than the kernel's 32-bit column count: an error before any launch (nothing
	// is read: the pointers are null).
	if err := testCUDA.SquareRows(F32, 0, 0, 1, math.MaxInt32+1); err == nil || !strings.Contains(err.Error(), "32-bit") {
		t.Errorf("SquareRows of 2^31 columns: %v, want the 32-bit limit named", err)
	}
	cuMust(t, testCUDA.Status())
}
