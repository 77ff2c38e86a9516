//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"

	"github.com/gomoe/gomoe/bfloat16"
)

// The training kernels on the GPU against their CPU twins (train.go): activations and row ops
// within a few ulps (CUDA's expf/tanhf against Go's float64 math), arithmetic and optimiser
// updates bit for bit, top-k ids equal.

func trRand(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func f32s(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func trClose(t *testing.T, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(got[i] - want[i]); d > abs+rel*math.Abs(want[i]) || math.IsNaN(got[i]) != math.IsNaN(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

func asF64[F float32 | float64](v []F) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

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

func TestCUDARowOps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, cols := range []int{1, 7, 32, 128, 300} {
		rows := 37
		n := rows * cols
		x, dy := trRand(rng, n, 4), trRand(rng, n, 1)
		for _, kind := range []RowOp{RowSoftmax, RowNormalize} {
			if kind == RowNormalize {
				for i := range x {
					x[i] = 0.1 + math.Abs(x[i])
				}
			}
			y := make([]float64, n)
			cuMust(t, RowForward(kind, y, x, cols))
			dx := make([]float64, n)
			cuMust(t, RowBackward(kind, dx, x, y, dy, cols))
			// float64
			bx, by, bdy := cuUpload(t, x), cuUpload(t, y), cuUpload(t, dy)
			out := cuAlloc(t, 8*int64(n))
			cuMust(t, testCUDA.RowForward(F64, kind, out.p, bx.p, int64(rows), cols))
			trClose(t, kind.String()+" f64 fwd", cuDownload[float64](t, out, n), y, 1e-13, 1e-16)
			cuMust(t, testCUDA.RowBackward(F64, kind, out.p, bx.p, by.p, bdy.p, int64(rows), cols))
			trClose(t, kind.String()+" f64 bwd", cuDownload[float64](t, out, n), dx, 1e-11, 1e-14)
			// float32
			X, DY := f32s(x), f32s(dy)
			Y := make([]float32, n)
			cuMust(t, RowForward(kind, Y, X, cols))
			DX := make([]float32, n)
			cuMust(t, RowBackward(kind, DX, X, Y, DY, cols))
			bX, bY, bDY := cuUpload(t, X), cuUpload(t, Y), cuUpload(t, DY)
			o32 := cuAlloc(t, 4*int64(n))
			cuMust(t, testCUDA.RowForward(F32, kind, o32.p, bX.p, int64(rows), cols))
			trClose(t, kind.String()+" f32 fwd", asF64(cuDownload[float32](t, o32, n)), asF64(Y), 1e-5, 1e-7)
			cuMust(t, testCUDA.RowBackward(F32, kind, o32.p, bX.p, bY.p, bDY.p, int64(rows), cols))
			trClose(t, kind.String()+" f32 bwd", asF64(cuDownload[float32](t, o32, n)), asF64(DX), 1e-4, 1e-6)
		}
	}
}

// refTopK is the selection rule written out: descending score+bias, ties to the lower id,
// within the kept groups (group score = sum of its top per selection scores).
func refTopK(s, bias []float64, T, E, K, groups, kept int) []int32 {
	ids := make([]int32, T*K)
	gs := E / groups
	per := max(1, K/kept)
	for t := 0; t < T; t++ {
		sel := make([]float64, E)
		for e := range sel {
			sel[e] = s[t*E+e]
			if bias != nil {
				sel[e] += bias[e]
			}
		}
		pick := func(allowed func(int) bool, n int, val func(int) float64, m int) []int {
			var out []int
			used := map[int]bool{}
			for k := 0; k < n; k++ {
				best := -1
				for i := 0; i < m; i++ {
					if used[i] || !allowed(i) {
						continue
					}
					if best < 0 || val(i) > val(best) {
						best = i
					}
				}
				used[best] = true
				out = append(out, best)
			}
			return out
		}
		allowed := func(int) bool { return true }
		if groups > 1 {
			gscore := make([]float64, groups)
			for g := 0; g < groups; g++ {
				top := pick(func(e int) bool { return e/gs == g }, min(per, gs), func(e int) float64 { return sel[e] }, E)
				for _, e := range top {
					gscore[g] += sel[e]
				}
			}
			keep := map[int]bool{}
			for _, g := range pick(func(int) bool { return true }, kept, func(g int) float64 { return gscore[g] }, groups) {
				keep[g] = true
			}
			allowed = func(e int) bool { return keep[e/gs] }
		}
		for k, e := range pick(allowed, K, func(e int) float64 { return sel[e] }, E) {
			ids[t*K+k] = int32(e)
		}
	}
	return ids
}

func TestCUDATopK(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []struct{ T, E, K, groups, kept int }{
		{100, 8, 2, 1, 1}, {64, 128, 8, 1, 1}, {50, 256, 8, 8, 4}, {33, 64, 6, 8, 3}, {10, 1024, 3, 1, 1}, {20, 6, 6, 3, 3},
	}
	for _, c := range cases {
		for _, withBias := range []bool{false, true} {
			s := trRand(rng, c.T*c.E, 1)
			for i := 0; i < len(s); i += 7 { // ties
				s[i] = 0.5
			}
			var bias []float64
			if withBias {
				bias = trRand(rng, c.E, 0.1)
			}
			// float64 scores: the rule in double, exactly
			want := refTopK(s, bias, c.T, c.E, c.K, c.groups, c.kept)
			bs := cuUpload(t, s)
			var bb cuDevBuf
			if withBias {
				bb = cuUpload(t, bias)
			}
			ids := cuAlloc(t, int64(4*c.T*c.K))
			cuMust(t, testCUDA.TopK(F64, ids.p, bs.p, bb.p, int64(c.T), c.E, c.K, c.groups, c.kept))
			got := cuDownload[int32](t, ids, c.T*c.K)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%+v bias=%v f64: ids[%d] = %d, want %d", c, withBias, i, got[i], want[i])
				}
			}
			// float32 scores: widened to double as the CPU op does
			S := f32s(s)
			var B []float32
			s32 := asF64(S)
			var b32 []float64
			if withBias {
				B = f32s(bias)
				b32 = asF64(B)
			}
			want = refTopK(s32, b32, c.T, c.E, c.K, c.groups, c.kept)
			bS := cuUpload(t, S)
			var bB cuDevBuf
			if withBias {
				bB = cuUpload(t, B)
			}
			cuMust(t, testCUDA.TopK(F32, ids.p, bS.p, bB.p, int64(c.T), c.E, c.K, c.groups, c.kept))
			got = cuDownload[int32](t, ids, c.T*c.K)
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%+v bias=%v f32: ids[%d] = %d, want %d", c, withBias, i, got[i], want[i])
				}
			}
		}
	}
	cuMust(t, testCUDA.Status())
	// NaN scores are flagged.
	s := []float32{1, float32(math.NaN()), 0, 2}
	bs := cuUpload(t, s)
	ids := cuAlloc(t, 8)
	cuMust(t, testCUDA.TopK(F32, ids.p, bs.p, 0, 1, 4, 2, 1, 1))
	if err := testCUDA.Status(); err == nil {
		t.Errorf("NaN score: no status error")
	}
	if err := testCUDA.TopK(F32, ids.p, bs.p, 0, 1, 4, 5, 1, 1); err == nil {
		t.Errorf("K > E: no error")
	}
}

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
	// An id >= E reads and writes nothing outside the buffers and is flagged.
	ids[7] = E
	bi = cuUpload(t, ids)
	cuMust(t, testCUDA.GatherTopK(F64, out.p, bs.p, bi.p, T, E, K))
	cuMust(t, testCUDA.GatherTopKBackward(F64, ds.p, bg.p, bi.p, T, E, K))
	if err := testCUDA.Status(); err == nil {
		t.Errorf("id = E: no status error")
	}
	if got := cuDownload[float64](t, out, T*K)[7]; got != 0 {
		t.Errorf("id = E gathered %v, want 0", got)
	}
}

func TestCUDABinaryAndOptimizers(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	const n = 4099
	a, b := trRand(rng, n, 2), trRand(rng, n, 2)
	A, B := f32s(a), f32s(b)
	ba, bb := cuUpload(t, A), cuUpload(t, B)
	out := cuAlloc(t, 4*n)
	for _, op := range []BinaryOp{OpAdd, OpSub, OpMul, OpDiv} {
		f := func(x, y float32) float32 {
			switch op {
			case OpAdd:
				return x + y
			case OpSub:
				return x - y
			case OpMul:
				return x * y
			}
			return x / y
		}
		for mode := 0; mode < 3; mode++ {
			pa, pb, s := ba.p, bb.p, 0.0
			const sc = float32(1.25)
			switch mode {
			case 1:
				pb, s = 0, float64(sc)
			case 2:
				pa, s = 0, float64(sc)
			}
			cuMust(t, testCUDA.Binary(F32, op, out.p, pa, pb, s, n))
			got := cuDownload[float32](t, out, n)
			for i := range got {
				x, y := A[i], B[i]
				if mode == 1 {
					y = sc
				} else if mode == 2 {
					x = sc
				}
				if w := f(x, y); math.Float32bits(got[i]) != math.Float32bits(w) {
					t.Fatalf("op %d mode %d: [%d] = %v, want %v", op, mode, i, got[i], w)
				}
			}
		}
	}
	// Adam and SGD: bit for bit with the CPU.
	p, g, m, v := f32s(trRand(rng, n, 1)), f32s(trRand(rng, n, 1)), make([]float32, n), make([]float32, n)
	bp, bg, bm, bv := cuUpload(t, p), cuUpload(t, g), cuUpload(t, m), cuUpload(t, v)
	for step := 1; step <= 3; step++ {
		c1, c2 := 1-math.Pow(0.9, float64(step)), 1-math.Pow(0.999, float64(step))
		cuMust(t, AdamUpdate(p, g, m, v, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
		cuMust(t, testCUDA.AdamUpdate(F32, bp.p, bg.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
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
	cuMust(t, testCUDA.SGDUpdate(F64, bp64.p, bg64.p, n, 0.1, 0.01))
	got := cuDownload[float64](t, bp64, n)
	for i := range got {
		if math.Float64bits(got[i]) != math.Float64bits(p64[i]) {
			t.Fatalf("SGD p[%d]: GPU %v, CPU %v", i, got[i], p64[i])
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
		cuMust(t, testCUDA.AdamUpdateBF16(bp.p, bg.p, bw.p, bm.p, bv.p, n, 1e-3, 0.9, 0.999, 1e-8, c1, c2, 0.01))
	}
	cuMust(t, SGDUpdateBF16(p, g, w32, 0.1, 0.01))
	cuMust(t, testCUDA.SGDUpdateBF16(bp.p, bg.p, bw.p, n, 0.1, 0.01))
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

func TestCUDAScaleRowsRowDot(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	const rows, cols = 37, 70
	x, s := f32s(trRand(rng, rows*cols, 1)), f32s(trRand(rng, rows, 1))
	y := make([]float32, rows*cols)
	cuMust(t, ScaleRows(y, x, s, cols))
	d := make([]float32, rows)
	cuMust(t, RowDot(d, y, x, cols))
	bx, bs := cuUpload(t, x), cuUpload(t, s)
	by := cuAlloc(t, 4*rows*cols)
	cuMust(t, testCUDA.ScaleRows(F32, by.p, bx.p, bs.p, rows, cols))
	gy := cuDownload[float32](t, by, rows*cols)
	for i := range y {
		if math.Float32bits(gy[i]) != math.Float32bits(y[i]) {
			t.Fatalf("ScaleRows [%d]: GPU %v, CPU %v", i, gy[i], y[i])
		}
	}
	bd := cuAlloc(t, 4*rows)
	cuMust(t, testCUDA.RowDot(F32, bd.p, by.p, bx.p, rows, cols))
	trClose(t, "RowDot", asF64(cuDownload[float32](t, bd, rows)), asF64(d), 1e-5, 1e-6)
	// bfloat16 data with float32 factors: products in float32, rounded once.
	xb := make([]bfloat16.BFloat16, rows*cols)
	cuMust(t, bfloat16.FromFloat32s(xb, x))
	wide := make([]float32, rows*cols)
	cuMust(t, bfloat16.ToFloat32s(wide, xb))
	cuMust(t, ScaleRows(y, wide, s, cols))
	want := make([]bfloat16.BFloat16, rows*cols)
	cuMust(t, bfloat16.FromFloat32s(want, y))
	bxb := cuUpload(t, xb)
	byb := cuAlloc(t, 2*rows*cols)
	cuMust(t, testCUDA.ScaleRows(BF16, byb.p, bxb.p, bs.p, rows, cols))
	got := cuDownload[bfloat16.BFloat16](t, byb, rows*cols)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ScaleRows bf16 [%d]: GPU %v, CPU %v", i, got[i], want[i])
		}
	}
}
