//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/bfloat16"
	. "github.com/gomoe/gomoe/kernels"
)

// The GPU kernels against their CPU twins: the activations within a few ulps (CUDA's expf/tanhf against
// Go's float64 math).

func TestCUDAActivations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 10007
	a, b, dy := trRand(rng, n, 3), trRand(rng, n, 1), trRand(rng, n, 1)
	for _, kind := range []Activation{SwiGLU, GELU, Sigmoid} {
		// float32
		{
			A, B, DY := f32s(a), f32s(b), f32s(dy)
			y := make([]float32, n)
			cuMust(t, ActivationForward(kind, y, A, B))
			bA, bB, bY, bDY := cuUpload(t, A), cuUpload(t, B), cuUpload(t, y), cuUpload(t, DY)
			out := cuAlloc(t, 4*n)
			cuMust(t, testCUDA.ActivationForward(F32, kind, out.p, bA.p, bB.p, n))
			trClose(t, kind.String()+" f32 fwd", asF64(cuDownload[float32](t, out, n)), asF64(y), 2e-6, 1e-6)
			for w := 0; w < kind.Inputs(); w++ {
				g := make([]float32, n)
				cuMust(t, ActivationBackward(kind, w, g, A, B, y, DY))
				cuMust(t, testCUDA.ActivationBackward(F32, kind, w, out.p, bA.p, bB.p, bY.p, bDY.p, n))
				// GELU's derivative cancels (1 + tanh ≈ 0) for large negative inputs: the
				// float32 GPU result is off by up to a few float32 ulps of 1 there.
				trClose(t, kind.String()+" f32 bwd", asF64(cuDownload[float32](t, out, n)), asF64(g), 1e-5, 1e-5)
			}
		}
		// float64
		{
			y := make([]float64, n)
			cuMust(t, ActivationForward(kind, y, a, b))
			da, dbb, yb, ydy := cuUpload(t, a), cuUpload(t, b), cuUpload(t, y), cuUpload(t, dy)
			out := cuAlloc(t, 8*n)
			cuMust(t, testCUDA.ActivationForward(F64, kind, out.p, da.p, dbb.p, n))
			trClose(t, kind.String()+" f64 fwd", cuDownload[float64](t, out, n), y, 1e-14, 1e-15)
			for w := 0; w < kind.Inputs(); w++ {
				g := make([]float64, n)
				cuMust(t, ActivationBackward(kind, w, g, a, b, y, dy))
				cuMust(t, testCUDA.ActivationBackward(F64, kind, w, out.p, da.p, dbb.p, yb.p, ydy.p, n))
				trClose(t, kind.String()+" f64 bwd", cuDownload[float64](t, out, n), g, 1e-13, 1e-13)
			}
		}
	}
}

// TestCUDAActivationsVectorPaths: the activations move 16 bytes at a time where every pointer
// is 16-byte aligned and one element at a time elsewhere; both give the same bits. bfloat16
// results match the float32 CPU kernel on the same (bfloat16) inputs within a bfloat16 rounding.
func TestCUDAActivationsVectorPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1031
	for _, d := range []DType{F32, BF16} {
		// a, b, dy: bufs[off][j] holds input j from element off on (off = 0: 16-byte aligned;
		// off = 1: one element past the base, so not aligned)
		var bufs [2][3]cuDevBuf
		f := make([][]float32, 3)
		for j, sc := range []float64{3, 1, 1} {
			v := trRand(rng, n, sc)
			if d == BF16 {
				for i := range v {
					v[i] = float64(bfloat16.FromFloat32(float32(v[i])).Float32())
				}
			}
			f[j] = f32s(v)
			bufs[0][j] = cuUploadAny(t, cuElems(d, v))
			bufs[1][j] = cuUploadAny(t, cuElems(d, append([]float64{0}, v...)))
		}
		out := cuAlloc(t, int64(d.Size()*(n+1)))
		yb := cuAlloc(t, int64(d.Size()*(n+1)))
		es := cu.DevicePtr(d.Size())
		read := func(o cuDevBuf, off int) []float64 {
			return asF64(cuWiden(cuDownloadAs(t, d, o, n+1)).([]float32))[off : off+n]
		}
		for _, kind := range []Activation{SwiGLU, GELU, Sigmoid} {
			var ref [][]float64 // aligned results: forward, then each input's gradient
			for _, off := range []int{0, 1} {
				p := func(j int) cu.DevicePtr { return bufs[off][j].p + es*cu.DevicePtr(off) }
				po, py := out.p+es*cu.DevicePtr(off), yb.p+es*cu.DevicePtr(off)
				cuMust(t, testCUDA.ActivationForward(d, kind, py, p(0), p(1), n))
				got := [][]float64{read(yb, off)}
				for w := 0; w < kind.Inputs(); w++ {
					cuMust(t, testCUDA.ActivationBackward(d, kind, w, po, p(0), p(1), py, p(2), n))
					got = append(got, read(out, off))
				}
				if off == 0 {
					ref = got
					// against the CPU (float32 on the same inputs)
					y := make([]float32, n)
					cuMust(t, ActivationForward(kind, y, f[0], f[1]))
					rel := map[DType]float64{F32: 2e-6, BF16: 8e-3}[d]
					trClose(t, kind.String()+" "+d.String()+" fwd", got[0], asF64(y), rel, 1e-6)
					continue
				}
				for j := range got {
					cuSameBits(t, fmt.Sprintf("%v %v result %d, misaligned against aligned", kind, d, j), got[j], ref[j])
				}
			}
		}
	}
}

// TestCUDASwiGLUPacked: the packed SwiGLU, forward and both halves of the gradient, against the
// CPU kernel (float32 and float64 within a few ulps; bfloat16 against the float32 CPU kernel on
// the same inputs within a bfloat16 rounding), with rows a vector holds whole (f = 768, 16) and
// rows it does not (f = 7, 1); with z one element off 16-byte alignment the results are the same
// bits.
func TestCUDASwiGLUPacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, d := range []DType{F32, F64, BF16} {
		for _, c := range []struct{ rows, f int }{{37, 768}, {9, 16}, {5, 7}, {3, 1}} {
			name := fmt.Sprintf("%v rows=%d f=%d", d, c.rows, c.f)
			n := c.rows * c.f
			z, dy := trRand(rng, 2*n, 3), trRand(rng, n, 1)
			if d == BF16 {
				for _, v := range [][]float64{z, dy} {
					for i := range v {
						v[i] = float64(bfloat16.FromFloat32(float32(v[i])).Float32())
					}
				}
			}
			// CPU reference: float64 for F64, float32 otherwise.
			var wantY, wantDZ []float64
			if d == F64 {
				y, dz := make([]float64, n), make([]float64, 2*n)
				cuMust(t, SwiGLUPackedForward(y, z, c.f))
				cuMust(t, SwiGLUPackedBackward(dz, z, dy, c.f))
				wantY, wantDZ = y, dz
			} else {
				y, dz := make([]float32, n), make([]float32, 2*n)
				cuMust(t, SwiGLUPackedForward(y, f32s(z), c.f))
				cuMust(t, SwiGLUPackedBackward(dz, f32s(z), f32s(dy), c.f))
				wantY, wantDZ = asF64(y), asF64(dz)
			}
			rel, abs := map[DType]float64{F32: 1e-5, F64: 1e-13, BF16: 8e-3}[d], map[DType]float64{F32: 1e-5, F64: 1e-13, BF16: 1e-6}[d]
			es := cu.DevicePtr(d.Size())
			var ref [2][]float64
			for _, off := range []int{0, 1} {
				zb := cuUploadAny(t, cuElems(d, append(make([]float64, off), z...)))
				gb := cuUploadAny(t, cuElems(d, append(make([]float64, off), dy...)))
				yb, dzb := cuAlloc(t, int64(d.Size()*(n+1))), cuAlloc(t, int64(d.Size()*(2*n+1)))
				o := es * cu.DevicePtr(off)
				cuMust(t, testCUDA.SwiGLUPackedForward(d, yb.p+o, zb.p+o, int64(c.rows), c.f))
				cuMust(t, testCUDA.SwiGLUPackedBackward(d, dzb.p+o, zb.p+o, gb.p+o, int64(c.rows), c.f))
				read := func(b cuDevBuf, m int) []float64 {
					v := cuWiden(cuDownloadAs(t, d, b, m+1))
					if f, ok := v.([]float32); ok {
						return asF64(f)[off : off+m]
					}
					return v.([]float64)[off : off+m]
				}
				got := [2][]float64{read(yb, n), read(dzb, 2*n)}
				if off == 0 {
					trClose(t, name+" fwd", got[0], wantY, rel, abs)
					trClose(t, name+" bwd", got[1], wantDZ, rel, abs)
					ref = got
					continue
				}
				cuSameBits(t, name+" fwd, misaligned against aligned", got[0], ref[0])
				cuSameBits(t, name+" bwd, misaligned against aligned", got[1], ref[1])
			}
		}
	}
	for _, c := range []struct {
		rows int64
		f    int
	}{{0, 4}, {4, 0}, {-1, 4}} {
		if err := testCUDA.SwiGLUPackedForward(F32, 0, 0, c.rows, c.f); err == nil {
			t.Errorf("SwiGLUPackedForward rows=%d f=%d: no error", c.rows, c.f)
		}
		if err := testCUDA.SwiGLUPackedBackward(F32, 0, 0, 0, c.rows, c.f); err == nil {
			t.Errorf("SwiGLUPackedBackward rows=%d f=%d: no error", c.rows, c.f)
		}
	}
}

// TestCUDASwiGLUPackedBench times the packed SwiGLU forward and backward at the layer's shapes
// (bfloat16, rows = T·K): go test -tags gomoecuda -run TestCUDASwiGLUPackedBench -v ./kernels/ -gomoe.bench
// Each line gives ms per call (CUDA events, mean of -gomoe.iters), the bandwidth of the bytes the
// pass must move (forward: z read, out written; backward: z and dy read, dz written) and its
// ratio to cuMemcpyDtoD moving as many bytes in the same run.
func TestCUDASwiGLUPackedBench(t *testing.T) {
	if !*gpuBenchFlag {
		t.Skip("run with -gomoe.bench")
	}
	for _, c := range []struct {
		name    string
		rows, f int
	}{{"qwen3", 4096 * 8, 768}, {"mixtral", 4096 * 2, 14336}} {
		d := BF16
		n := int64(c.rows) * int64(c.f) * int64(d.Size()) // bytes of one [rows,f] matrix
		z, dz, dy, y := cuAlloc(t, 2*n), cuAlloc(t, 2*n), cuAlloc(t, n), cuAlloc(t, n)
		// bfloat16 pairs of about 0.5 and -0.25 in every word: finite inputs on both sides of 0.
		for _, b := range []cuDevBuf{z, dy} {
			cuMust(t, testCUDA.Do(func() error { return cu.MemsetD32(b.p, 0xbe803f00, b.n/4) }))
		}
		src, dst := cuAlloc(t, 3*n), cuAlloc(t, 3*n)
		for _, k := range []struct {
			name  string
			bytes int64
			f     func() error
		}{
			{"fwd", 3 * n, func() error { return testCUDA.SwiGLUPackedForward(d, y.p, z.p, int64(c.rows), c.f) }},
			{"bwd", 5 * n, func() error { return testCUDA.SwiGLUPackedBackward(d, dz.p, z.p, dy.p, int64(c.rows), c.f) }},
		} {
			ms := cuTimeIt(t, *gpuBenchIters, k.f)
			// The copy moves the same bytes: half read, half written.
			half := k.bytes / 2
			cms := cuTimeIt(t, *gpuBenchIters, func() error { return cu.MemcpyDtoD(dst.p, src.p, half) })
			gbs, cgbs := float64(k.bytes)/(ms*1e-3)/1e9, float64(k.bytes)/(cms*1e-3)/1e9
			t.Logf("%-8s rows=%d f=%d bf16 swiglu %s  %.4f ms  %6.0f GB/s  copy %6.0f GB/s  %5.1f %%", c.name, c.rows, c.f, k.name, ms, gbs, cgbs, 100*gbs/cgbs)
		}
	}
}

// TestCUDAActivationsSaturated: far out, the GPU's activations give their limits, as the CPU's do
// (TestActivationsSaturated): GELU and SwiGLU (b = 1) x and derivative 1 for large positive x,
// 0 and 0 for large negative x; Sigmoid 1 and 0, derivative 0. GELU's derivative used to be NaN
// from |x| ≈ 5e19 in float32 and bfloat16 ((3·0.044715·x)·x overflowed beside tanh's 1 − th² = 0).
func TestCUDAActivationsSaturated(t *testing.T) {
	for _, d := range []DType{F32, BF16, F64} {
		xs := []float64{1e12, 2e13, 1e20, 1e30, 3e38}
		if d == F64 {
			xs = append(xs, 1e150, 3.7e154, 1e200, 1.7e308)
		}
		var in []float64
		for _, x := range xs {
			in = append(in, x, -x)
		}
		in = cuToF64(cuWiden(cuElems(d, in))) // the values as d holds them
		n := len(in)
		ones := make([]float64, n)
		for i := range ones {
			ones[i] = 1
		}
		a, b, dy := cuUploadAny(t, cuElems(d, in)), cuUploadAny(t, cuElems(d, ones)), cuUploadAny(t, cuElems(d, ones))
		y, g := cuAlloc(t, int64(d.Size()*n)), cuAlloc(t, int64(d.Size()*n))
		read := func(b cuDevBuf) []float64 { return cuToF64(cuWiden(cuDownloadAs(t, d, b, n))) }
		for _, kind := range []Activation{GELU, SwiGLU, Sigmoid} {
			cuMust(t, testCUDA.ActivationForward(d, kind, y.p, a.p, b.p, int64(n)))
			got := [][]float64{read(y)}
			for w := 0; w < kind.Inputs(); w++ {
				cuMust(t, testCUDA.ActivationBackward(d, kind, w, g.p, a.p, b.p, y.p, dy.p, int64(n)))
				got = append(got, read(g))
			}
			for i, x := range in {
				want := []float64{x, 1, x} // y, da, db (SwiGLU)
				if x < 0 {
					want = []float64{0, 0, 0}
				}
				if kind == Sigmoid {
					want = []float64{want[1], 0}
				}
				for j := range got {
					if got[j][i] != want[j] {
						t.Errorf("%v %v at x=%g: result %d = %g, want %g", d, kind, x, j, got[j][i], want[j])
					}
				}
			}
		}
	}
}
