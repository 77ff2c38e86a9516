package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
)

// unpermBwdOld is UnpermuteBackward as it was before the one-pass row kernel, with plain
// loops: dyp[r] = probs·dy[t] (one rounding) or dy[t], dprobs = dot64's formula written out
// (8 float64 lanes in h order from +0, each product rounded to float64, the fixed lane tree),
// 0 for dropped slots, the rows no slot reaches cleared.
func unpermBwdOld[F Float](dyp, dprobs, dy, yp, probs []F, p Plan, H int) {
	K := p.K
	for t := 0; t < p.T; t++ {
		g := dy[t*H : (t+1)*H]
		for k, r := range p.RowOf[t*K : (t+1)*K] {
			if r < 0 {
				if dprobs != nil {
					dprobs[t*K+k] = 0
				}
				continue
			}
			if dyp != nil {
				for h := range H {
					if probs == nil {
						dyp[int(r)*H+h] = g[h]
					} else {
						dyp[int(r)*H+h] = probs[t*K+k] * g[h]
					}
				}
			}
			if dprobs != nil {
				var l [8]float64
				for h := range H {
					l[h%8] += float64(float64(yp[int(r)*H+h]) * float64(g[h]))
				}
				dprobs[t*K+k] = F(((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7])))
			}
		}
	}
	if dyp != nil {
		for r, t := range p.TokenOf {
			if t < 0 {
				clear(dyp[r*H : (r+1)*H])
			}
		}
	}
}

// TestUnpermuteBackwardBits checks UnpermuteBackward (the one-pass row kernels, their Go
// remainder and the non-temporal stores of a large dyp) bit for bit against the old loops
// over random shapes: H around the vector widths, dropped slots, pad rows, and each of probs,
// dyp and dprobs nil.
func TestUnpermuteBackwardBits(t *testing.T) {
	t.Run("f32", func(t *testing.T) { testUnpermBwdBits[float32](t) })
	t.Run("f64", func(t *testing.T) { testUnpermBwdBits[float64](t) })
}

func testUnpermBwdBits[F Float](t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	type shape struct{ T, K, E, A, H int }
	var shapes []shape
	for _, H := range []int{1, 7, 8, 31, 32, 33, 39, 40, 64, 67, 129, 1000} {
		shapes = append(shapes, shape{T: 1 + rng.IntN(40), K: 1 + rng.IntN(4), E: 6, A: 1 + rng.IntN(4), H: H})
	}
	var e F
	// One dyp past unpermNTMin, with rows alternately on and off a 32-byte boundary.
	es := int(unsafe.Sizeof(e))
	shapes = append(shapes, shape{T: 128, K: 4, E: 8, A: 1, H: unpermNTMin/es/256 + 16/es})
	for i, s := range shapes {
		g := Geometry{T: s.T, K: s.K, E: s.E, A: s.A}
		if i%3 == 1 {
			g.Mode, g.C = Capacity, 1+s.T*s.K/(2*s.E) // drops over capacity
		}
		ids := randomIDs(rng, s.T, s.K, s.E, 0.2)
		flat := make([]int32, g.PlanLen())
		if err := BuildPlan(flat, g, ids, []F(nil)); err != nil {
			t.Fatal(err)
		}
		p, err := g.View(flat)
		if err != nil {
			t.Fatal(err)
		}
		R := g.Rows()
		if i == len(shapes)-1 && R*s.H*es < unpermNTMin {
			t.Fatalf("%d rows of %d: dyp below unpermNTMin", R, s.H)
		}
		fill := func(n int) []F {
			v := make([]F, n)
			for j := range v {
				v[j] = F(rng.NormFloat64() * math.Exp(4*rng.NormFloat64()))
			}
			return v
		}
		dy, yp, probs := fill(s.T*s.H), fill(R*s.H), fill(s.T*s.K)
		for mask := range 8 { // bit 0: probs nil, bit 1: dyp nil, bit 2: dprobs nil
			pr := probs
			if mask&1 != 0 {
				pr = nil
			}
			var got, want [2][]F // dyp, dprobs
			for _, w := range []*[2][]F{&got, &want} {
				if mask&2 == 0 {
					w[0] = fill(R * s.H) // every row must be written
				}
				if mask&4 == 0 {
					w[1] = fill(s.T * s.K)
				}
			}
			if err := UnpermuteBackward(got[0], got[1], dy, yp, pr, p, s.H); err != nil {
				t.Fatal(err)
			}
			unpermBwdOld(want[0], want[1], dy, yp, pr, p, s.H)
			for j := range 2 {
				for x := range want[j] {
					if !sameBitsOf(got[j][x], want[j][x]) {
						t.Fatalf("%+v mode %v mask %d: %s[%d] = %v, want %v", s, g.Mode, mask,
							[]string{"dyp", "dprobs"}[j], x, got[j][x], want[j][x])
					}
				}
			}
		}
	}
}

// sameBitsOf reports whether a and b have the same bits.
func sameBitsOf[F Float](a, b F) bool {
	switch a := any(a).(type) {
	case float32:
		return math.Float32bits(a) == math.Float32bits(any(b).(float32))
	case float64:
		return math.Float64bits(a) == math.Float64bits(any(b).(float64))
	}
	panic(fmt.Sprintf("sameBitsOf: %T", a))
}

func TestBF16DotLanes(t *testing.T) {
	for _, c := range []struct{ H, want int }{
		{0, 32}, {1, 32}, {8, 32}, {256, 32}, {257, 64}, {2048, 256}, {2056, 160}, {4096, 256},
		{7168, 224}, {6168, 224}, {1 << 20, 256}, // 6168: 771 packs, 4 per lane: 193 → 224
	} {
		if got := BF16DotLanes(c.H); got != c.want {
			t.Errorf("BF16DotLanes(%d) = %d, want %d", c.H, got, c.want)
		}
	}
}

// TestDotBF16Order checks DotBF16's order on products chosen so that every other order gives
// another float32 value (b is all ones, so the products are a's values). ε = 2^24, where
// float32 has a spacing of 2: ε+1 rounds to ε (ties to even), ε+2 is exact.
func TestDotBF16Order(t *testing.T) {
	const eps = float32(1 << 24)
	at := func(H int, v map[int]float32) []float32 {
		a := make([]float32, H)
		for i, x := range v {
			a[i] = x
		}
		return a
	}
	cases := []struct {
		name string
		a    []float32
		want float32 // by hand from the order in DotBF16's comment
	}{
		// ((ε+1)+(1+1)) + ((−ε+0)+(0+0)) = (ε+2) − ε = 2; in h order 0, exact 3.
		{"pack tree", at(8, map[int]float32{0: eps, 1: 1, 2: 1, 3: 1, 4: -eps}), 2},
		// 258 packs, 160 lanes (2 packs each, ⌈258/2⌉ = 129 rounded up to 32s): packs 0 and
		// 160 share lane 0 (ε − ε = 0), pack 1 is lane 1; in h order (ε+1) − ε = 0.
		{"lane wrap", at(8*258, map[int]float32{0: eps, 8: 1, 8 * 160: -eps}), 1},
		// 32 packs, 32 lanes, one warp: lanes 0 = ε, 1 = 1, 3 = 1; the tree adds lane 3 to lane
		// 1 (o = 2) before lane 1 to lane 0 (o = 1): ε + 2; lanes in order give ε.
		{"warp tree", at(8*32, map[int]float32{0: eps, 8: 1, 24: 1}), eps + 2},
		// 64 lanes, two warps: ε in warp 0, 1 and 1 in warp 1 (lanes 32, 33): ε + (1+1) = ε+2;
		// in h order ε.
		{"warps in order", at(8*64, map[int]float32{0: eps, 8 * 32: 1, 8 * 33: 1}), eps + 2},
		// a short last pack, H = 11, padded with +0 products: ((1+1)+(ε+0))+((0+0)+(0+0)) = ε+2.
		{"short pack", at(11, map[int]float32{8: 1, 9: 1, 10: eps}), eps + 2},
	}
	for _, c := range cases {
		b := make([]float32, len(c.a))
		for i := range b {
			b[i] = 1
		}
		if got := DotBF16(c.a, b); got != c.want {
			t.Errorf("%s: DotBF16 = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestDotBF16Accuracy compares DotBF16 on random bfloat16 values with the float64 dot
// product: the float32 sums along any path of the order add at most 3 (pack) + ⌈packs/L⌉
// (lane) + 5 (warp) + L/32 (warps) roundings of 2^-24 each, relative to Σ|a·b|.
func TestDotBF16Accuracy(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	bf := func() float32 { return bf16Trunc(float32(rng.NormFloat64() * math.Exp(2*rng.NormFloat64()))) }
	for _, H := range []int{1, 5, 8, 9, 100, 255, 256, 2051, 4096, 7168, 20000} {
		a, b := make([]float32, H), make([]float32, H)
		var exact, mag float64
		for i := range a {
			a[i], b[i] = bf(), bf()
			p := float64(a[i]) * float64(b[i])
			exact += p
			mag += math.Abs(p)
		}
		nq := (H + 7) / 8
		L := BF16DotLanes(H)
		steps := 3 + (nq+L-1)/L + 5 + L/32
		got := float64(DotBF16(a, b))
		if d := math.Abs(got - exact); d > float64(steps)*0x1p-24*mag*1.01 {
			t.Errorf("H=%d: DotBF16 = %.9g, float64 %.9g: |diff| %.3g > %d roundings of Σ|ab| = %.3g", H, got, exact, d, steps, mag)
		}
	}
}

// TestUnpermuteBackwardBF16 checks the bfloat16 twin against UnpermuteBackward's rows and
// DotBF16 per slot (0 for dropped slots), with and without probs, dyp and dprobs.
func TestUnpermuteBackwardBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, H := range []int{3, 8, 70, 2056} {
		g := Geometry{T: 30, K: 3, E: 5, A: 2, Mode: Capacity, C: 12}
		p := buildTestPlan(t, g, randomIDs(rng, g.T, g.K, g.E, 0.1), nil)
		R := g.Rows()
		fill := func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = bf16Trunc(float32(rng.NormFloat64()))
			}
			return v
		}
		dy, yp, probs := fill(g.T*H), fill(R*H), fill(g.T*g.K)
		for _, pr := range [][]float32{probs, nil} {
			dyp, dp := fill(R*H), fill(g.T*g.K)
			wantRows := make([]float32, R*H)
			if err := UnpermuteBackwardBF16(dyp, dp, dy, yp, pr, p, H); err != nil {
				t.Fatal(err)
			}
			if err := UnpermuteBackward(wantRows, nil, dy, nil, pr, p, H); err != nil {
				t.Fatal(err)
			}
			for i := range wantRows {
				if math.Float32bits(dyp[i]) != math.Float32bits(wantRows[i]) {
					t.Fatalf("H=%d: dyp[%d] = %v, want %v", H, i, dyp[i], wantRows[i])
				}
			}
			for i, r := range p.RowOf {
				want := float32(0)
				if r >= 0 {
					tok := i / g.K
					want = DotBF16(yp[int(r)*H:int(r+1)*H], dy[tok*H:(tok+1)*H])
				}
				if math.Float32bits(dp[i]) != math.Float32bits(want) {
					t.Fatalf("H=%d: dprobs[%d] = %v, want %v", H, i, dp[i], want)
				}
			}
			// dprobs alone, and dyp alone.
			dp2 := fill(g.T * g.K)
			if err := UnpermuteBackwardBF16(nil, dp2, dy, yp, pr, p, H); err != nil {
				t.Fatal(err)
			}
			for i := range dp {
				if math.Float32bits(dp2[i]) != math.Float32bits(dp[i]) {
					t.Fatalf("H=%d: dprobs alone [%d] = %v, with dyp %v", H, i, dp2[i], dp[i])
				}
			}
		}
	}
}

func BenchmarkUnpermuteBackwardBF16(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 2))
	g := Geometry{T: 256, K: 8, E: 32, A: 1}
	const H = 2048
	p := buildTestPlan(b, g, randomIDs(rng, g.T, g.K, g.E, 0), nil)
	R := g.Rows()
	fill := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return v
	}
	dy, yp, probs := fill(g.T*H), fill(R*H), fill(g.T*g.K)
	dyp, dp := make([]float32, R*H), make([]float32, g.T*g.K)
	for _, c := range []struct {
		name string
		f    func(dyp, dprobs, dy, yp, probs []float32, p Plan, H int) error
	}{{"float32", UnpermuteBackward[float32]}, {"bf16twin", UnpermuteBackwardBF16}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(4 * (g.T*H + 2*g.T*g.K*H)))
			for b.Loop() {
				if err := c.f(dyp, dp, dy, yp, probs, p, H); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestDotBF16Lengths: DotBF16 takes the shorter operand's length (no panic) and is 0 on empty input.
func TestDotBF16Lengths(t *testing.T) {
	a, b := []float32{1, 2, 3}, []float32{4, 5}
	if got := DotBF16(a, b); got != 14 {
		t.Errorf("DotBF16(len 3, len 2) = %v, want 1·4+2·5 = 14", got)
	}
	if got := DotBF16(b, a); got != 14 {
		t.Errorf("DotBF16(len 2, len 3) = %v, want 14", got)
	}
	if got := DotBF16(nil, a); got != 0 || math.Signbit(float64(got)) {
		t.Errorf("DotBF16(nil, a) = %v, want +0", got)
	}
}

// bf16Trunc returns x with its low 16 bits cleared: a bfloat16 value (8 significant bits).
func bf16Trunc(x float32) float32 { return math.Float32frombits(math.Float32bits(x) &^ 0xffff) }
