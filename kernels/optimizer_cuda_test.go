//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"

	"github.com/gomoe/gomoe/bfloat16"
)

// The GPU kernels against their CPU twins: the optimiser updates, bit for bit.

// TestCUDAOptimizers: three float32 Adam steps and a float64 SGD step on the GPU equal the CPU
// AdamUpdate and SGDUpdate bit for bit. The last Adam step and the SGD step take their scalars
// from device memory (as a step replayed from a CUDA graph), with wrong values in the
// arguments that they must ignore.
func TestCUDAOptimizers(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 11))
	const n = 4099
	p, g, m, v := f32s(trRand(rng, n, 1)), f32s(trRand(rng, n, 1)), make([]float32, n), make([]float32, n)
	bp, bg, bm, bv := cuUpload(t, p), cuUpload(t, g), cuUpload(t, m), cuUpload(t, v)
	for step := 1; step <= 3; step++ {
		c1, c2 := 1-math.Pow(0.9, float64(step)), 1-math.Pow(0.999, float64(step))
		cuMust(t, AdamUpdate(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
		if step < 3 {
			cuMust(t, testCUDA.AdamUpdate(F32, bp.p, bg.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0))
		} else {
			sc := cuUpload(t, []float64{1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0})
			cuMust(t, testCUDA.AdamUpdate(F32, bp.p, bg.p, bm.p, bv.p, n, 7, 0.5, 0.5, 1, 0.5, 0.5, 3, sc.p))
		}
	}
	for name, pair := range map[string][2][]float32{"p": {cuDownload[float32](t, bp, n), p}, "m": {cuDownload[float32](t, bm, n), m}, "v": {cuDownload[float32](t, bv, n), v}} {
		for i := range pair[1] {
			if math.Float32bits(pair[0][i]) != math.Float32bits(pair[1][i]) {
				t.Fatalf("Adam %s[%d]: GPU %v, CPU %v", name, i, pair[0][i], pair[1][i])
			}
		}
	}
	p64, g64 := trRand(rng, n, 1), trRand(rng, n, 1)
	bp64, bg64 := cuUpload(t, p64), cuUpload(t, g64)
	cuMust(t, SGDUpdate(p64, g64, 0.1, 0.01))
	cuMust(t, testCUDA.SGDUpdate(F64, bp64.p, bg64.p, n, 5, 7, cuUpload(t, []float64{0.1, 0.01, 0}).p))
	got := cuDownload[float64](t, bp64, n)
	for i := range got {
		if math.Float64bits(got[i]) != math.Float64bits(p64[i]) {
			t.Fatalf("SGD p[%d]: GPU %v, CPU %v", i, got[i], p64[i])
		}
	}
	// A skip flag in the scalars (a NaN gradient norm under clipping) leaves everything as it
	// was: weights, moments and masters.
	pb, mb, vb := cuDownload[float32](t, bp, n), cuDownload[float32](t, bm, n), cuDownload[float32](t, bv, n)
	cuMust(t, testCUDA.AdamUpdate(F32, bp.p, bg.p, bm.p, bv.p, n, 1, 0.5, 0.5, 1, 0.5, 0.5, 0, cuUpload(t, []float64{1, 0.5, 0.5, 1, 0.5, 0.5, 0, 1}).p))
	cuMust(t, testCUDA.SGDUpdate(F64, bp64.p, bg64.p, n, 1, 0, cuUpload(t, []float64{1, 0, 1}).p))
	for name, pair := range map[string][2][]float32{"p": {cuDownload[float32](t, bp, n), pb}, "m": {cuDownload[float32](t, bm, n), mb}, "v": {cuDownload[float32](t, bv, n), vb}} {
		for i := range pair[1] {
			if math.Float32bits(pair[0][i]) != math.Float32bits(pair[1][i]) {
				t.Fatalf("skipped Adam changed %s[%d]: %v, was %v", name, i, pair[0][i], pair[1][i])
			}
		}
	}
	for i, x := range cuDownload[float64](t, bp64, n) {
		if math.Float64bits(x) != math.Float64bits(got[i]) {
			t.Fatalf("skipped SGD changed p[%d]: %v, was %v", i, x, got[i])
		}
	}
}

// TestCUDABFloat16Optimizers: the bfloat16 updates through float32 master weights give the
// CPU twins' bits (weights, masters, moments).
func TestCUDABFloat16Optimizers(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n = 3001
	w32 := f32s(trRand(rng, n, 1))
	p := make([]bfloat16.BFloat16, n)
	cuMust(t, bfloat16.FromFloat32s(p, w32))
	g := make([]bfloat16.BFloat16, n)
	cuMust(t, bfloat16.FromFloat32s(g, f32s(trRand(rng, n, 1))))
	m, v := make([]float32, n), make([]float32, n)
	bp, bg, bw, bm, bv := cuUpload(t, p), cuUpload(t, g), cuUpload(t, w32), cuUpload(t, m), cuUpload(t, v)
	for step := 1; step <= 3; step++ {
		c1, c2 := 1-math.Pow(0.9, float64(step)), 1-math.Pow(0.999, float64(step))
		cuMust(t, AdamUpdateBF16(p, g, w32, m, v, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
		if step < 3 {
			cuMust(t, testCUDA.AdamUpdateBF16(bp.p, bg.p, bw.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0))
		} else {
			sc := cuUpload(t, []float64{1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0})
			cuMust(t, testCUDA.AdamUpdateBF16(bp.p, bg.p, bw.p, bm.p, bv.p, n, 7, 0.5, 0.5, 1, 0.5, 0.5, 3, sc.p))
		}
	}
	cuMust(t, SGDUpdateBF16(p, g, w32, 0.1, 0.01))
	cuMust(t, testCUDA.SGDUpdateBF16(bp.p, bg.p, bw.p, n, 0.1, 0.01, 0))
	gp := cuDownload[bfloat16.BFloat16](t, bp, n)
	for i := range p {
		if gp[i] != p[i] {
			t.Fatalf("p[%d]: GPU %v, CPU %v", i, gp[i], p[i])
		}
	}
	for name, pair := range map[string][2][]float32{"w32": {cuDownload[float32](t, bw, n), w32}, "m": {cuDownload[float32](t, bm, n), m}, "v": {cuDownload[float32](t, bv, n), v}} {
		for i := range pair[1] {
			if math.Float32bits(pair[0][i]) != math.Float32bits(pair[1][i]) {
				t.Fatalf("%s[%d]: GPU %v, CPU %v", name, i, pair[0][i], pair[1][i])
			}
		}
	}
	// Conversions round to nearest even like the CPU.
	x := f32s(trRand(rng, n, 10))
	bx := cuUpload(t, x)
	out := cuAlloc(t, 2*n)
	cuMust(t, testCUDA.Convert(F32, BF16, out.p, bx.p, n))
	want := make([]bfloat16.BFloat16, n)
	cuMust(t, bfloat16.FromFloat32s(want, x))
	got := cuDownload[bfloat16.BFloat16](t, out, n)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("convert f32→bf16 [%d]: GPU %v, CPU %v", i, got[i], want[i])
		}
	}
	back := cuAlloc(t, 4*n)
	cuMust(t, testCUDA.Convert(BF16, F32, back.p, out.p, n))
	for i, f := range cuDownload[float32](t, back, n) {
		if f != want[i].Float32() {
			t.Fatalf("convert bf16→f32 [%d]: %v, want %v", i, f, want[i].Float32())
		}
	}
}

// TestCUDAAdamHugeGradient: with gradients whose square overflows at some elements in the
// first step (float32 ±2·10¹⁹, float64 ±10¹⁵⁵, bfloat16 ±2·10¹⁹), then ordinary ones, the
// device's Adam keeps v finite as the CPU's does (TestAdamHugeGradient) and gives its bits:
// weights, moments and masters.
func TestCUDAAdamHugeGradient(t *testing.T) {
	const n = 19
	grads := func(step int, huge float64) []float64 {
		g := make([]float64, n)
		for i := range g {
			g[i] = 0.5 + 0.1*float64(i)
		}
		if step == 1 {
			g[3], g[12], g[17] = huge, -huge, huge
		}
		return g
	}
	for _, d := range []DType{F32, F64, BF16} {
		huge := map[DType]float64{F32: 2e19, F64: 1e155, BF16: 2e19}[d]
		p0 := make([]float64, n)
		for i := range p0 {
			p0[i] = 1 - 0.05*float64(i)
		}
		var w32, m32, v32 []float32
		var pb []bfloat16.BFloat16
		var p64, m64, v64 []float64
		switch d {
		case F64:
			p64, m64, v64 = append([]float64(nil), p0...), make([]float64, n), make([]float64, n)
		default:
			w32, m32, v32 = f32s(p0), make([]float32, n), make([]float32, n)
			pb = make([]bfloat16.BFloat16, n)
			cuMust(t, bfloat16.FromFloat32s(pb, w32))
		}
		md := map[DType]DType{F32: F32, F64: F64, BF16: F32}[d] // the masters' and moments' type
		bw := cuUploadAny(t, cuElems(md, p0))
		bm, bv := cuUploadAny(t, cuElems(md, make([]float64, n))), cuUploadAny(t, cuElems(md, make([]float64, n)))
		bp := cuUploadAny(t, cuElems(BF16, p0))
		for step := 1; step <= 3; step++ {
			c1, c2 := 1-math.Pow(0.9, float64(step)), 1-math.Pow(0.999, float64(step))
			g := grads(step, huge)
			bg := cuUploadAny(t, cuElems(d, g))
			switch d {
			case F64:
				cuMust(t, AdamUpdate(p64, g, m64, v64, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
				cuMust(t, testCUDA.AdamUpdate(F64, bw.p, bg.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0))
			case F32:
				cuMust(t, AdamUpdate(w32, f32s(g), m32, v32, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
				cuMust(t, testCUDA.AdamUpdate(F32, bw.p, bg.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0))
			case BF16:
				gb := cuElems(BF16, g).([]bfloat16.BFloat16)
				cuMust(t, AdamUpdateBF16(pb, gb, w32, m32, v32, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
				cuMust(t, testCUDA.AdamUpdateBF16(bp.p, bg.p, bw.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01, 0))
			}
		}
		if d == F64 {
			for name, pair := range map[string][2][]float64{"p": {cuDownload[float64](t, bw, n), p64}, "m": {cuDownload[float64](t, bm, n), m64}, "v": {cuDownload[float64](t, bv, n), v64}} {
				cuSameBits(t, "float64 Adam "+name, pair[0], pair[1])
			}
		} else {
			for name, pair := range map[string][2][]float32{"w": {cuDownload[float32](t, bw, n), w32}, "m": {cuDownload[float32](t, bm, n), m32}, "v": {cuDownload[float32](t, bv, n), v32}} {
				cuSameBits(t, fmt.Sprintf("%v Adam %s", d, name), pair[0], pair[1])
			}
			if d == BF16 {
				cuSameBits(t, "bfloat16 Adam p", cuDownload[bfloat16.BFloat16](t, bp, n), pb)
			}
		}
		for i, x := range v32 {
			if math.IsInf(float64(x), 0) {
				t.Fatalf("%v: v[%d] is infinite", d, i)
			}
		}
		for i, x := range v64 {
			if math.IsInf(x, 0) {
				t.Fatalf("%v: v[%d] is infinite", d, i)
			}
		}
	}
}
