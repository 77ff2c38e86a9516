package kernels

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/gomoe/gomoe/internal/reftest"
)

func buildTestPlan(t testing.TB, g Geometry, ids []int32, probs []float64) Plan {
	t.Helper()
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan(flat, g, ids, probs); err != nil {
		t.Fatal(err)
	}
	p, err := g.View(flat)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// maxAbsDiff is reftest.MaxDiff: the largest |a[i] - b[i]|, or +Inf when the lengths differ or
// a difference is NaN (math.Max would carry the NaN out, and NaN passes every "d > tol" check).
var maxAbsDiff = reftest.MaxDiff

// TestKernelsMatchReference runs every data kernel on every plan case, in float64 and
// float32, against the reference loops.
func TestKernelsMatchReference(t *testing.T) {
	for _, c := range planCases() {
		for _, H := range []int{1, 5, 64} {
			if c.g.T > 1000 && H > 5 {
				continue
			}
			rng := rand.New(rand.NewPCG(3, uint64(H)))
			ids := c.ids(rng)
			probs := randFloats(rng, len(ids))
			p := buildTestPlan(t, c.g, ids, probs)
			_, _, rowOf, _ := refPlan(c.g, ids, probs)
			T, K, R := c.g.T, c.g.K, c.g.Rows()
			x := randFloats(rng, T*H)
			yp := randFloats(rng, R*H)
			dy := randFloats(rng, T*H)
			dpp := randFloats(rng, R)

			// references
			wantXP := refPermute(x, rowOf, c.g, H)
			wantPP := make([]float64, R)
			wantDX := make([]float64, T*H)
			wantDProbsPermute := make([]float64, T*K)
			wantDYP := make([]float64, R*H)
			wantDProbs := make([]float64, T*K)
			for i, r := range rowOf {
				if r < 0 {
					continue
				}
				t0 := i / K
				wantPP[r] = probs[i]
				wantDProbsPermute[i] = dpp[r]
				for h := 0; h < H; h++ {
					wantDX[t0*H+h] += yp[int(r)*H+h] // dx = permute^T(dxp) with dxp := yp
					wantDYP[int(r)*H+h] = probs[i] * dy[t0*H+h]
					wantDProbs[i] += yp[int(r)*H+h] * dy[t0*H+h]
				}
			}
			wantY := refUnpermute(yp, probs, rowOf, T, K, H)
			wantYU := refUnpermute(yp, nil, rowOf, T, K, H)

			name := c.name
			check := func(what string, got, want []float64, tol float64) {
				t.Helper()
				if d := maxAbsDiff(got, want); d > tol || len(got) != len(want) {
					t.Errorf("%s H=%d %s: max diff %g", name, H, what, d)
				}
			}
			run := func(tol float64, isF32 bool) {
				if isF32 {
					runKernels[float32](t, p, H, to32(x), to32(yp), to32(dy), to32(dpp), to32(probs), check, tol,
						wantXP, wantPP, wantDX, wantDProbsPermute, wantY, wantYU, wantDYP, wantDProbs)
				} else {
					runKernels[float64](t, p, H, x, yp, dy, dpp, probs, check, tol,
						wantXP, wantPP, wantDX, wantDProbsPermute, wantY, wantYU, wantDYP, wantDProbs)
				}
			}
			run(1e-12, false)
			run(1e-5, true)
		}
	}
}

func runKernels[F Float](t *testing.T, p Plan, H int, x, yp, dy, dpp, probs []F, check func(string, []float64, []float64, float64), tol float64,
	wantXP, wantPP, wantDX, wantDProbsPermute, wantY, wantYU, wantDYP, wantDProbs []float64) {
	t.Helper()
	T, K, R := p.T, p.K, p.Rows()
	fill := func(n int) []F { // outputs start as garbage: kernels must overwrite every element
		v := make([]F, n)
		for i := range v {
			v[i] = F(math.NaN())
		}
		return v
	}
	xp := fill(R * H)
	must(t, PermuteForward(xp, x, p, H))
	check("permute forward", to64(xp), roundTo[F](wantXP), 0)
	pp := fill(R)
	must(t, PermuteProbsForward(pp, probs, p))
	check("permute probs forward", to64(pp), roundTo[F](wantPP), 0)
	dx := fill(T * H)
	must(t, PermuteBackward(dx, yp, p, H))
	check("permute backward", to64(dx), wantDX, tol)
	dprobs := fill(T * K)
	must(t, PermuteProbsBackward(dprobs, dpp, p))
	check("permute probs backward", to64(dprobs), roundTo[F](wantDProbsPermute), 0)
	y := fill(T * H)
	must(t, UnpermuteForward(y, yp, probs, p, H))
	check("unpermute forward", to64(y), wantY, tol)
	must(t, UnpermuteForward(y, yp, nil, p, H))
	check("unpermute forward unweighted", to64(y), wantYU, tol)
	dyp, dpr := fill(R*H), fill(T*K)
	must(t, UnpermuteBackward(dyp, dpr, dy, yp, probs, p, H))
	check("unpermute backward rows", to64(dyp), wantDYP, tol)
	check("unpermute backward probs", to64(dpr), wantDProbs, tol*float64(H))
	dyp2 := fill(R * H)
	must(t, UnpermuteBackward(dyp2, nil, dy, nil, nil, p, H))
	wantDYPU := reftest.Permute(to64(dy), p.RowOf, T, K, R, H) // unweighted: dyp[r] = dy[tokenOf[r]]
	check("unpermute backward rows unweighted", to64(dyp2), wantDYPU, 0)
}

// roundTo rounds reference values to F, for exact comparisons of pure data movement.
func roundTo[F Float](v []float64) []float64 { return to64(fromF64[F](v)) }

func fromF64[F Float](v []float64) []F {
	out := make([]F, len(v))
	for i, x := range v {
		out[i] = F(x)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRoundTrip: with no drops and every prob 1/K, unpermute(permute(x)) = x; a plan that sends
// token t to expert t is the identity.
func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	T, K, E, H := 33, 4, 8, 16
	g := Geometry{T: T, K: K, E: E, A: 4}
	ids := randomIDs(rng, T, K, E, 0)
	p := buildTestPlan(t, g, ids, nil)
	x := randFloats(rng, T*H)
	probs := make([]float64, T*K)
	for i := range probs {
		probs[i] = 0.25 // exact in binary, so the round trip is exact
	}
	xp := make([]float64, g.Rows()*H)
	must(t, PermuteForward(xp, x, p, H))
	y := make([]float64, T*H)
	must(t, UnpermuteForward(y, xp, probs, p, H))
	if d := maxAbsDiff(x, y); d != 0 {
		t.Errorf("unpermute(permute(x)) with probs 1/K differs from x by %g", d)
	}

	id := Geometry{T: 6, K: 1, E: 6, A: 1}
	ids = []int32{0, 1, 2, 3, 4, 5}
	p = buildTestPlan(t, id, ids, nil)
	x = randFloats(rng, 6*H)
	xp = make([]float64, id.Rows()*H)
	must(t, PermuteForward(xp, x, p, H))
	if d := maxAbsDiff(x, xp); d != 0 {
		t.Errorf("identity plan: permute(x) differs from x by %g", d)
	}
	y = make([]float64, 6*H)
	must(t, UnpermuteForward(y, xp, nil, p, H))
	if d := maxAbsDiff(x, y); d != 0 {
		t.Errorf("identity plan: unpermute differs from x by %g", d)
	}
}

// TestKernelsDeterministic: bitwise identical outputs over repeated runs and GOMAXPROCS values.
func TestKernelsDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	g := Geometry{T: 3000, K: 6, E: 32, A: 8}
	H := 24
	ids := randomIDs(rng, g.T, g.K, g.E, 0.02)
	p := buildTestPlan(t, g, ids, nil)
	x := to32(randFloats(rng, g.T*H))
	yp := to32(randFloats(rng, g.Rows()*H))
	probs := to32(randFloats(rng, g.T*g.K))
	run := func() [][]float32 {
		xp := make([]float32, g.Rows()*H)
		dx := make([]float32, g.T*H)
		y := make([]float32, g.T*H)
		dyp := make([]float32, g.Rows()*H)
		dpr := make([]float32, g.T*g.K)
		must(t, PermuteForward(xp, x, p, H))
		must(t, PermuteBackward(dx, yp, p, H))
		must(t, UnpermuteForward(y, yp, probs, p, H))
		must(t, UnpermuteBackward(dyp, dpr, x, yp, probs, p, H))
		return [][]float32{xp, dx, y, dyp, dpr}
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	var ref [][]float32
	for _, procs := range []int{1, 4, 2, 7, 1, 4} {
		runtime.GOMAXPROCS(procs)
		got := run()
		if ref == nil {
			ref = got
			continue
		}
		for i := range got {
			for j := range got[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(ref[i][j]) {
					t.Fatalf("GOMAXPROCS=%d: output %d element %d differs bitwise", procs, i, j)
				}
			}
		}
	}
}

func TestKernelsRejectWrongSizes(t *testing.T) {
	g := Geometry{T: 4, K: 2, E: 3, A: 1}
	p := buildTestPlan(t, g, []int32{0, 1, 1, 2, 2, 0, 0, -1}, nil)
	H, R := 3, g.Rows()
	ok := func(n int) []float32 { return make([]float32, n) }
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"permute x", PermuteForward(ok(R*H), ok(4*H-1), p, H), "permute: x"},
		{"permute xp", PermuteForward(ok(R*H+1), ok(4*H), p, H), "permute: xp"},
		{"permute probs", PermuteProbsForward(ok(R), ok(7), p), "probs"},
		{"permute backward", PermuteBackward(ok(4*H), ok(R), p, H), "dxp"},
		{"permute probs backward", PermuteProbsBackward(ok(8), ok(R-1), p), "dpp"},
		{"unpermute yp", UnpermuteForward(ok(4*H), ok(R), nil, p, H), "yp"},
		{"unpermute probs", UnpermuteForward(ok(4*H), ok(R*H), ok(3), p, H), "probs"},
		{"unpermute backward dy", UnpermuteBackward(ok(R*H), nil, ok(1), nil, nil, p, H), "dy"},
		{"unpermute backward yp", UnpermuteBackward(nil, ok(8), ok(4*H), ok(1), nil, p, H), "yp"},
	}
	for _, c := range cases {
		if c.err == nil || !strings.Contains(c.err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error naming %q", c.name, c.err, c.want)
		}
	}
}

// TestNegativeZeroContract: sums start at +0 (the CUDA kernels' contract), so a lone -0 term
// comes out as +0 in both backward and unpermute forward.
func TestNegativeZeroContract(t *testing.T) {
	g := Geometry{T: 1, K: 1, E: 1, A: 1}
	p := buildTestPlan(t, g, []int32{0}, nil)
	negZero := []float32{float32(math.Copysign(0, -1))}
	out := []float32{1}
	must(t, PermuteBackward(out, negZero, p, 1))
	if math.Signbit(float64(out[0])) {
		t.Error("permute backward kept -0; the contract says the sum starts at +0")
	}
	out[0] = 1
	must(t, UnpermuteForward(out, negZero, []float32{1}, p, 1))
	if math.Signbit(float64(out[0])) {
		t.Error("unpermute forward kept -0; the contract says the sum starts at +0")
	}
}

// TestPermuteForwardLarge: an xp past unpermNTMin, which PermuteForward writes with
// non-temporal stores (rows alternately on and off a 32-byte boundary, so both store paths
// run, and a tail shorter than a vector), equals reftest's permute bit for bit in float32 and
// float64; the garbage xp held before is gone from every row.
func TestPermuteForwardLarge(t *testing.T) {
	t.Run("f32", func(t *testing.T) { testPermuteForwardLarge[float32](t) })
	t.Run("f64", func(t *testing.T) { testPermuteForwardLarge[float64](t) })
}

func testPermuteForwardLarge[F Float](t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 9))
	var e F
	es := int(unsafe.Sizeof(e))
	H := unpermNTMin/es/256 + 16/es + 3 // 32-byte rows alternate; 3 elements past the vectors
	g := Geometry{T: 128, K: 4, E: 8, A: 4}
	ids := randomIDs(rng, g.T, g.K, g.E, 0.1)
	p := buildTestPlan(t, g, ids, nil)
	_, _, rowOf, _ := refPlan(g, ids, nil)
	R := g.Rows()
	if R*H*es < unpermNTMin {
		t.Fatalf("%d rows of %d: xp below unpermNTMin", R, H)
	}
	x := randFloats(rng, g.T*H)
	want := refPermute(x, rowOf, g, H)
	xf := make([]F, len(x))
	for i, v := range x {
		xf[i] = F(v)
	}
	xp := make([]F, R*H)
	for i := range xp {
		xp[i] = F(math.NaN())
	}
	if err := PermuteForward(xp, xf, p, H); err != nil {
		t.Fatal(err)
	}
	for i, v := range xp {
		if !sameBitsOf(v, F(want[i])) {
			t.Fatalf("xp[%d] (row %d) = %v, want %v", i, i/H, v, F(want[i]))
		}
	}
}
