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
