package kernels

import (
	"math"
	"math/rand"
	"runtime"
	"testing"
)

// gmmRandIDs draws [T,K] distinct expert ids per token; expert `skip` (if >= 0) is never chosen.
func gmmRandIDs(rng *rand.Rand, T, K, E, skip int) []int32 {
	ids := make([]int32, 0, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		n := 0
		for _, e := range perm {
			if e == skip || n == K {
				continue
			}
			ids = append(ids, int32(e))
			n++
		}
	}
	return ids
}

func gmmRand(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.Float64()*2 - 1
	}
	return v
}

func gmmConv[F Float](v []float64) []F {
	out := make([]F, len(v))
	for i, x := range v {
		out[i] = F(x)
	}
	return out
}

// gmmRef computes the grouped matmul and its backward with plain loops. The expert of each row
// comes from the pairs: row rowOf[t,k] holds token t for expert ids[t,k].
func gmmRef(ids, rowOf []int32, R, E, H, N int, xp, w, dz []float64) (z, dxp, dw []float64) {
	z = make([]float64, R*N)
	dxp = make([]float64, R*H)
	dw = make([]float64, E*H*N)
	expertOf := make([]int, R)
	for r := range expertOf {
		expertOf[r] = -1
	}
	for i, r := range rowOf {
		if r >= 0 {
			expertOf[r] = int(ids[i])
		}
	}
	for r := 0; r < R; r++ {
		e := expertOf[r]
		if e < 0 {
			continue
		}
		for j := 0; j < N; j++ {
			var s float64
			for h := 0; h < H; h++ {
				s += xp[r*H+h] * w[e*H*N+h*N+j]
			}
			z[r*N+j] = s
		}
		for h := 0; h < H; h++ {
			var s float64
			for j := 0; j < N; j++ {
				s += dz[r*N+j] * w[e*H*N+h*N+j]
			}
			dxp[r*H+h] = s
		}
		for h := 0; h < H; h++ {
			for j := 0; j < N; j++ {
				dw[e*H*N+h*N+j] += xp[r*H+h] * dz[r*N+j]
			}
		}
	}
	return z, dxp, dw
}

func gmmMaxDiff(a, b []float64) float64 {
	var m float64
	for i := range a {
		if d := math.Abs(a[i] - b[i]); d > m || math.IsNaN(d) {
			m = d
		}
	}
	return m
}

func TestGroupedMatMulMatchesReference(t *testing.T) {
	cases := []struct {
		name          string
		g             Geometry
		H, N, skip    int
		minusOneEvery int
	}{
		{"T1 E1 K1", Geometry{T: 1, K: 1, E: 1, A: 1}, 3, 2, -1, 0},
		{"dropless", Geometry{T: 37, K: 2, E: 5, A: 1}, 6, 4, -1, 0},
		{"dropless A4 idle expert", Geometry{T: 40, K: 2, E: 6, A: 4}, 5, 7, 3, 0},
		{"K=E", Geometry{T: 9, K: 4, E: 4, A: 2}, 3, 3, -1, 0},
		{"ids -1", Geometry{T: 30, K: 3, E: 6, A: 1}, 4, 5, -1, 4},
		{"capacity position", Geometry{T: 50, K: 2, E: 4, A: 1, Mode: Capacity, C: 12}, 4, 3, -1, 0},
		{"capacity prob pad A8", Geometry{T: 50, K: 2, E: 4, A: 8, Mode: Capacity, C: 10, Drop: DropByProb, PadToCapacity: true}, 4, 3, 1, 0},
		{"big segment (several row blocks)", Geometry{T: 700, K: 1, E: 2, A: 1}, 8, 9, -1, 0},
	}
	for ci, c := range cases {
		rng := rand.New(rand.NewSource(int64(ci + 1)))
		g := c.g
		ids := gmmRandIDs(rng, g.T, g.K, g.E, c.skip)
		if c.minusOneEvery > 0 {
			for i := range ids {
				if i%c.minusOneEvery == 1 {
					ids[i] = -1
				}
			}
		}
		probs := gmmRand(rng, g.T*g.K)
		flat := make([]int32, g.PlanLen())
		if err := BuildPlan(flat, g, ids, probs); err != nil {
			t.Fatalf("%s: plan: %v", c.name, err)
		}
		p, _ := g.View(flat)
		R := g.Rows()
		xp := gmmRand(rng, R*c.H)
		// The row buffer's pad rows hold garbage on purpose: the kernel must not read them into
		// any result (the reference skips them too).
		w := gmmRand(rng, g.E*c.H*c.N)
		dz := gmmRand(rng, R*c.N)
		wantZ, wantDxp, wantDw := gmmRef(ids, p.RowOf, R, g.E, c.H, c.N, xp, w, dz)
		t.Run(c.name+"/f64", func(t *testing.T) {
			gmmCheckKernels[float64](t, p, c.H, c.N, xp, w, dz, wantZ, wantDxp, wantDw, 1e-12)
		})
		t.Run(c.name+"/f32", func(t *testing.T) {
			gmmCheckKernels[float32](t, p, c.H, c.N, xp, w, dz, wantZ, wantDxp, wantDw, 1e-4)
		})
	}
}

func gmmCheckKernels[F Float](t *testing.T, p Plan, H, N int, xp64, w64, dz64, wantZ, wantDxp, wantDw []float64, tol float64) {
	xp, w, dz := gmmConv[F](xp64), gmmConv[F](w64), gmmConv[F](dz64)
	R := p.Rows()
	// Outputs start as NaN garbage: every element must be written.
	nan := func(n int) []F {
		v := make([]F, n)
		for i := range v {
			v[i] = F(math.NaN())
		}
		return v
	}
	z, dxp, dw := nan(R*N), nan(R*H), nan(p.E*H*N)
	if err := GroupedMatMulForward(z, xp, w, p, H, N); err != nil {
		t.Fatal(err)
	}
	if err := GroupedMatMulBackwardRows(dxp, dz, w, p, H, N, false); err != nil {
		t.Fatal(err)
	}
	if err := GroupedMatMulBackwardWeights(dw, xp, dz, p, H, N, false); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what      string
		got, want []float64
	}{{"z", to64(z), wantZ}, {"dxp", to64(dxp), wantDxp}, {"dw", to64(dw), wantDw}} {
		if d := gmmMaxDiff(c.got, c.want); !(d <= tol) {
			t.Errorf("%s: max abs diff %g > %g", c.what, d, tol)
		}
	}
	// accumulate: adding into a copy of the result doubles the real part; pad rows of dxp keep
	// what they held.
	dxp2 := append([]F(nil), dxp...)
	dw2 := append([]F(nil), dw...)
	if err := GroupedMatMulBackwardRows(dxp2, dz, w, p, H, N, true); err != nil {
		t.Fatal(err)
	}
	if err := GroupedMatMulBackwardWeights(dw2, xp, dz, p, H, N, true); err != nil {
		t.Fatal(err)
	}
	twice := func(v []float64) []float64 {
		o := make([]float64, len(v))
		for i, x := range v {
			o[i] = 2 * x
		}
		return o
	}
	if d := gmmMaxDiff(to64(dxp2), twice(wantDxp)); !(d <= 2*tol) {
		t.Errorf("accumulated dxp: max abs diff %g", d)
	}
	if d := gmmMaxDiff(to64(dw2), twice(wantDw)); !(d <= 2*tol) {
		t.Errorf("accumulated dw: max abs diff %g", d)
	}
}

func TestGroupedMatMulDeterministic(t *testing.T) {
	rng := rand.New(rand.NewSource(9))
	g := Geometry{T: 600, K: 2, E: 3, A: 4}
	H, N := 16, 24
	ids := gmmRandIDs(rng, g.T, g.K, g.E, -1)
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan[float32](flat, g, ids, nil); err != nil {
		t.Fatal(err)
	}
	p, _ := g.View(flat)
	R := g.Rows()
	xp, w, dz := gmmConv[float32](gmmRand(rng, R*H)), gmmConv[float32](gmmRand(rng, g.E*H*N)), gmmConv[float32](gmmRand(rng, R*N))
	run := func(procs int) (z, dxp, dw []float32) {
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
		z, dxp, dw = make([]float32, R*N), make([]float32, R*H), make([]float32, g.E*H*N)
		for _, err := range []error{
			GroupedMatMulForward(z, xp, w, p, H, N),
			GroupedMatMulBackwardRows(dxp, dz, w, p, H, N, false),
			GroupedMatMulBackwardWeights(dw, xp, dz, p, H, N, false),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	z1, dx1, dw1 := run(1)
	for _, procs := range []int{1, 2, 4} {
		z2, dx2, dw2 := run(procs)
		for i := range z1 {
			if math.Float32bits(z1[i]) != math.Float32bits(z2[i]) {
				t.Fatalf("GOMAXPROCS=%d: z[%d] differs", procs, i)
			}
		}
		for i := range dx1 {
			if math.Float32bits(dx1[i]) != math.Float32bits(dx2[i]) {
				t.Fatalf("GOMAXPROCS=%d: dxp[%d] differs", procs, i)
			}
		}
		for i := range dw1 {
			if math.Float32bits(dw1[i]) != math.Float32bits(dw2[i]) {
				t.Fatalf("GOMAXPROCS=%d: dw[%d] differs", procs, i)
			}
		}
	}
}

func TestGroupedMatMulRejectsBadSizes(t *testing.T) {
	g := Geometry{T: 4, K: 1, E: 2, A: 1}
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan[float64](flat, g, []int32{0, 1, 1, 0}, nil); err != nil {
		t.Fatal(err)
	}
	p, _ := g.View(flat)
	H, N := 3, 2
	xp, w, z := make([]float64, 4*H), make([]float64, 2*H*N), make([]float64, 4*N)
	sentinel := func(v []float64) []float64 {
		for i := range v {
			v[i] = 7
		}
		return v
	}
	if err := GroupedMatMulForward(sentinel(z), xp[:5], w, p, H, N); err == nil {
		t.Error("short xp: no error")
	}
	for _, v := range z {
		if v != 7 {
			t.Fatal("forward wrote its output despite an error")
		}
	}
	if err := GroupedMatMulForward(z, xp, w[:3], p, H, N); err == nil {
		t.Error("short w: no error")
	}
	if err := GroupedMatMulBackwardRows(make([]float64, 4*H), z[:1], w, p, H, N, false); err == nil {
		t.Error("short dz: no error")
	}
	if err := GroupedMatMulBackwardWeights(make([]float64, 1), xp, z, p, H, N, false); err == nil {
		t.Error("short dw: no error")
	}
	bad := p
	bad.Counts = []int32{3, 9}
	if err := GroupedMatMulForward(z, xp, w, bad, H, N); err == nil {
		t.Error("count past R: no error")
	}
}

// gmmNamed is a named float type: gonum does not take it, so the kernels use their plain-loop
// gemm, which must give the same results.
type gmmNamed float64

func TestGroupedMatMulNamedFloatType(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	g := Geometry{T: 20, K: 2, E: 3, A: 2}
	H, N := 3, 5
	ids := gmmRandIDs(rng, g.T, g.K, g.E, -1)
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan[float64](flat, g, ids, nil); err != nil {
		t.Fatal(err)
	}
	p, _ := g.View(flat)
	R := g.Rows()
	xp, w, dz := gmmRand(rng, R*H), gmmRand(rng, g.E*H*N), gmmRand(rng, R*N)
	wantZ, wantDxp, wantDw := gmmRef(ids, p.RowOf, R, g.E, H, N, xp, w, dz)
	gmmCheckKernels[gmmNamed](t, p, H, N, xp, w, dz, wantZ, wantDxp, wantDw, 1e-12)
}

// TestGroupedMatMulRowsBeforeFirstSegment: a valid plan whose first segment starts past row
// 0 (Plan.Check accepts it; those rows hold no token) gets those rows zeroed like the pad rows
// by the forward and the overwriting row backward (they were left holding stale values).
func TestGroupedMatMulRowsBeforeFirstSegment(t *testing.T) {
	for _, c := range []struct {
		counts, offsets, rowOf, tokenOf []int32
		T                               int
	}{
		{[]int32{1, 1}, []int32{1, 2, 3}, []int32{1, 2, -1}, []int32{-1, 0, 1}, 3},
		{[]int32{1, 0}, []int32{2, 3, 3}, []int32{2, -1, -1}, []int32{-1, -1, 0}, 3},
	} {
		g := Geometry{T: c.T, K: 1, E: 2, A: 1}
		p, _ := g.View(make([]int32, g.PlanLen()))
		copy(p.Counts, c.counts)
		copy(p.Offsets, c.offsets)
		copy(p.RowOf, c.rowOf)
		copy(p.TokenOf, c.tokenOf)
		if err := p.Check(); err != nil {
			t.Fatal(err)
		}
		H, N, R := 2, 3, g.Rows()
		fill := func(n int, v float64) []float64 {
			s := make([]float64, n)
			for i := range s {
				s[i] = v
			}
			return s
		}
		w := fill(2*H*N, 1)
		z := fill(R*N, 7)
		if err := GroupedMatMulForward(z, fill(R*H, 1), w, p, H, N); err != nil {
			t.Fatal(err)
		}
		dxp := fill(R*H, 7)
		if err := GroupedMatMulBackwardRows(dxp, fill(R*N, 1), w, p, H, N, false); err != nil {
			t.Fatal(err)
		}
		for r := 0; r < int(c.offsets[0]); r++ {
			for j := 0; j < N; j++ {
				if z[r*N+j] != 0 {
					t.Errorf("offsets %v: forward z[%d,%d] = %v, want 0", c.offsets, r, j, z[r*N+j])
				}
			}
			for h := 0; h < H; h++ {
				if dxp[r*H+h] != 0 {
					t.Errorf("offsets %v: backward dxp[%d,%d] = %v, want 0", c.offsets, r, h, dxp[r*H+h])
				}
			}
		}
	}
}
