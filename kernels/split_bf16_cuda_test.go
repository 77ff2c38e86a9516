//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomoe/gomoe/bfloat16"
	. "github.com/gomoe/gomoe/kernels"
)

// TestCUDASplitBF16: the device pieces equal the CPU twin's bit for bit in both layouts, for
// random values of many magnitudes and the special ones.
func TestCUDASplitBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, cols = 37, 29
	in := make([]float32, rows*cols)
	for i := range in {
		in[i] = float32(rng.NormFloat64() * math.Ldexp(1, rng.IntN(80)-40))
	}
	copy(in, []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.MaxFloat32, -math.MaxFloat32, 1e-40, 0, float32(math.Copysign(0, -1)), 1 + 0x1p-8})
	dIn := cuUpload(t, in)
	for _, tc := range []struct {
		name                               string
		rows, cols, rowStride, pieceStride int
		pattern                            []int
	}{
		{"six pairs side by side", rows, cols, 6 * cols, cols, []int{2, 0, 1, 1, 0, 0}},
		{"whole pieces, padded", 1, rows * cols, 0, rows*cols + 5, []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := (tc.rows-1)*tc.rowStride + (len(tc.pattern)-1)*tc.pieceStride + tc.cols
			want := make([]bfloat16.BFloat16, n)
			out := cuUpload(t, want) // zeros where nothing is written
			cuMust(t, SplitBF16(want, in, tc.rows, tc.cols, tc.rowStride, tc.pieceStride, tc.pattern))
			cuMust(t, testCUDA.SplitBF16(out.p, dIn.p, tc.rows, tc.cols, tc.rowStride, tc.pieceStride, tc.pattern))
			cuSameBits(t, tc.name, cuDownload[bfloat16.BFloat16](t, out, n), want)
		})
	}
	if err := testCUDA.SplitBF16(0, dIn.p, 1, 1, 0, 1, []int{0}); err == nil {
		t.Fatal("a null output: no error")
	}
	if err := testCUDA.SplitBF16(dIn.p, dIn.p, 1, 2, 0, 1, []int{0, 1}); err == nil {
		t.Fatal("overlapping pieces: no error")
	}
}

// splitOperand returns n random values of dtype d (as float64 holding them exactly) and their
// device copy.
func splitOperand(t *testing.T, rng *rand.Rand, d DType, n int) ([]float64, cuDevBuf) {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64()
	}
	e := cuElems(d, v)
	return cuToF64(cuWiden(e)), cuUploadAny(t, e)
}

// splitRefGemm is the first rows rows of op(A)·op(B) [m,n] in float64, with |op(A)|·|op(B)|
// (the scale of each element's rounding error).
func splitRefGemm(ta, tb bool, m, n, k, rows int, a, b []float64) (c, scale []float64) {
	c, scale = make([]float64, rows*n), make([]float64, rows*n)
	for i := 0; i < rows; i++ {
		for j := 0; j < n; j++ {
			var s, sa float64
			for l := 0; l < k; l++ {
				x, y := a[i*k+l], b[l*n+j]
				if ta {
					x = a[l*m+i]
				}
				if tb {
					y = b[j*k+l]
				}
				s += x * y
				sa += math.Abs(x * y)
			}
			c[i*n+j], scale[i*n+j] = s, sa
		}
	}
	return c, scale
}

// gemmErr returns the rms and the largest of |got − ref| / scale, where a bfloat16 output is
// first compared with the reference rounded to bfloat16 (so only the GEMM's error counts).
func gemmErr(got, ref, scale []float64, od DType) (rms, worst float64) {
	for i := range got {
		r := ref[i]
		if od == BF16 {
			r = float64(bfloat16.FromFloat32(float32(r)).Float32())
		}
		e := math.Abs(got[i]-r) / scale[i]
		rms += e * e
		worst = math.Max(worst, e)
	}
	return math.Sqrt(rms / float64(len(got))), worst
}

// TestCUDASplitGemm: every form of SplitGemm (float32 or bfloat16 operands in each position,
// either transposed, a float32 or bfloat16 output) equals the float64 product of its exact
// inputs within float32 accumulation error. With k = 1 (a handful of exact products summed)
// each element is within 2⁻²⁰ of Σ|a·b|, where leaving out a product of pieces kept would
// show as an error of up to 2⁻¹⁷ of it (above 2⁻²⁰ for most values: over the thousands of
// elements one fails); with longer k each element is within 2⁻¹⁶ and, for float32·float32 →
// float32, the rms error within 8 times that of cuBLAS's float32 GEMM on the same data. A
// bfloat16 output must be the rounding of a value that close to the float64 product.
func TestCUDASplitGemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, sz := range [][4]int{{64, 48, 1, -20}, {37, 19, 53, -16}, {256, 128, 512, -16}} {
		m, n, k := sz[0], sz[1], sz[2]
		bound := math.Ldexp(1, sz[3])
		for _, dts := range [][3]DType{{BF16, F32, F32}, {F32, BF16, F32}, {F32, F32, BF16}, {F32, F32, F32}, {BF16, BF16, F32}, {BF16, F32, BF16}} {
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				ad, bd, od := dts[0], dts[1], dts[2]
				ta, tb := tr[0], tr[1]
				name := fmt.Sprintf("%dx%dx%d %v·%v→%v ta=%v tb=%v", m, n, k, ad, bd, od, ta, tb)
				t.Run(name, func(t *testing.T) {
					a, da := splitOperand(t, rng, ad, m*k)
					b, db := splitOperand(t, rng, bd, k*n)
					ref, scale := splitRefGemm(ta, tb, m, n, k, m, a, b)
					need, err := SplitGemmScratch(m, n, k, ad, bd, od)
					cuMust(t, err)
					scratch := cuAlloc(t, need)
					out := cuAlloc(t, int64(m*n*od.Size()))
					cuMust(t, testCUDA.SplitGemm(ta, tb, m, n, k, da.p, ad, db.p, bd, out.p, od, scratch.p, need))
					got := cuToF64(cuWiden(cuDownloadAs(t, od, out, m*n)))
					rms, worst := gemmErr(got, ref, scale, od)
					if od == BF16 { // the rounding of a value within bound·scale of ref
						for i := range got {
							d := bound * scale[i]
							lo := float64(bfloat16.FromFloat32(float32(ref[i] - d)).Float32())
							hi := float64(bfloat16.FromFloat32(float32(ref[i] + d)).Float32())
							if got[i] < lo || got[i] > hi {
								t.Fatalf("[%d] = %.9g, want the bfloat16 of %.9g ± %.3g (between %.9g and %.9g)", i, got[i], ref[i], d, lo, hi)
							}
						}
						worst = 0
					}
					if worst > bound {
						t.Fatalf("largest error %.3g of Σ|a·b|, want at most %.3g (rms %.3g)", worst, bound, rms)
					}
					if ad == F32 && bd == F32 && od == F32 { // against cuBLAS's float32 GEMM
						sg := cuAlloc(t, int64(4*m*n))
						lda, ldb := k, n
						if ta {
							lda = m
						}
						if tb {
							ldb = k
						}
						cuMust(t, testCUDA.Gemm(F32, ta, tb, m, n, k, 1, da.p, lda, db.p, ldb, 0, sg.p, n))
						srms, _ := gemmErr(cuToF64(cuDownload[float32](t, sg, m*n)), ref, scale, F32)
						t.Logf("rms error / Σ|a·b|: split %.3g, SGEMM %.3g", rms, srms)
						if rms > 8*srms+1e-12 {
							t.Fatalf("rms error %.3g, SGEMM's %.3g: more than 8 times", rms, srms)
						}
					}
				})
			}
		}
	}
	// Bad arguments.
	if _, err := SplitGemmScratch(1, 1, 1, F64, F32, F32); err == nil {
		t.Fatal("float64: no error")
	}
	if _, err := SplitGemmScratch(0, 1, 1, F32, F32, F32); err == nil {
		t.Fatal("m = 0: no error")
	}
	buf := cuAlloc(t, 64)
	if err := testCUDA.SplitGemm(false, false, 2, 2, 2, buf.p, F32, buf.p, F32, buf.p, F32, buf.p, 8); err == nil {
		t.Fatal("short scratch: no error")
	}
	if err := testCUDA.SplitGemm(false, false, 2, 2, 2, 0, BF16, buf.p, BF16, buf.p, F32, 0, 0); err == nil {
		t.Fatal("null a: no error")
	}
}

// TestCUDASplitGemmBench times the bfloat16 layer's three router matmuls at the benchmark
// shapes: go test -tags gomoecuda -run TestCUDASplitGemmBench -v ./kernels/ -gomoe.bench
// Each line gives ms per call (CUDA events, mean of -gomoe.iters) of SplitGemm and of what the
// layer did before in the same run (x cast to float32 and a float32 cuBLAS GEMM; the input
// gradient as a float32 GEMM cast to bfloat16), the TFLOP/s of the product's 2·M·N·K and the
// ratio, and the rms error of both over 64 rows against float64 (relative to Σ|a·b|).
func TestCUDASplitGemmBench(t *testing.T) {
	if !*gpuBenchFlag {
		t.Skip("run with -gomoe.bench")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []struct {
		name    string
		T, H, E int
	}{{"qwen3", 4096, 2048, 128}, {"mixtral", 4096, 4096, 8}} {
		T, H, E := c.T, c.H, c.E
		xv, xb := splitOperand(t, rng, BF16, T*H)
		wv, wf := splitOperand(t, rng, F32, H*E)
		dv, df := splitOperand(t, rng, F32, T*E)
		x32 := cuAlloc(t, int64(4*T*H))
		cuMust(t, testCUDA.Convert(BF16, F32, x32.p, xb.p, int64(T*H)))
		out32 := cuAlloc(t, int64(4*T*H))
		out16 := cuAlloc(t, int64(2*T*H))
		for _, f := range []struct {
			name    string
			ta, tb  bool
			m, n, k int
			a, b    cuDevBuf
			ad, bd  DType
			od      DType
			av, bv  []float64
			sgemm   func() error // the float32 path
		}{
			{"logits = x·w", false, false, T, E, H, xb, wf, BF16, F32, F32, xv, wv, func() error {
				if err := testCUDA.Convert(BF16, F32, x32.p, xb.p, int64(T*H)); err != nil {
					return err
				}
				return testCUDA.Gemm(F32, false, false, T, E, H, 1, x32.p, H, wf.p, E, 0, out32.p, E)
			}},
			{"dw = xᵀ·dlogits", true, false, H, E, T, xb, df, BF16, F32, F32, xv, dv, func() error {
				return testCUDA.Gemm(F32, true, false, H, E, T, 1, x32.p, H, df.p, E, 0, out32.p, E)
			}},
			{"dx = dlogits·wᵀ", false, true, T, H, E, df, wf, F32, F32, BF16, dv, wv, func() error {
				if err := testCUDA.Gemm(F32, false, true, T, H, E, 1, df.p, E, wf.p, E, 0, out32.p, H); err != nil {
					return err
				}
				return testCUDA.Convert(F32, BF16, out16.p, out32.p, int64(T*H))
			}},
		} {
			need, err := SplitGemmScratch(f.m, f.n, f.k, f.ad, f.bd, f.od)
			cuMust(t, err)
			s := cuAlloc(t, need)
			out := out32
			if f.od == BF16 {
				out = out16
			}
			split := func() error {
				return testCUDA.SplitGemm(f.ta, f.tb, f.m, f.n, f.k, f.a.p, f.ad, f.b.p, f.bd, out.p, f.od, s.p, need)
			}
			ms := cuTimeIt(t, *gpuBenchIters, split)
			sms := cuTimeIt(t, *gpuBenchIters, f.sgemm)
			// rms errors over the first 64 rows (one of the two float32 results, each fresh)
			const rows = 64
			errOf := func(run func() error, od DType) float64 {
				cuMust(t, run())
				o := out32
				if od == BF16 {
					o = out16
				}
				got := cuToF64(cuWiden(cuDownloadAs(t, od, o, rows*f.n)))
				ref, scale := splitRefGemm(f.ta, f.tb, f.m, f.n, f.k, rows, f.av, f.bv)
				rms, _ := gemmErr(got, ref, scale, od)
				return rms
			}
			es, eg := errOf(split, f.od), errOf(f.sgemm, f.od)
			fl := 2 * float64(f.m) * float64(f.n) * float64(f.k)
			t.Logf("%-8s %-18s split %.4f ms %5.0f TFLOP/s | float32 %.4f ms %5.0f TFLOP/s | %.2fx | rms err %.2g vs %.2g",
				c.name, f.name, ms, fl/(ms*1e-3)/1e12, sms, fl/(sms*1e-3)/1e12, sms/ms, es, eg)
		}
	}
}
