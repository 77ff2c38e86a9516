package kernels

import (
	"math"
	"testing"
)

// fuzzPlan is fuzzGeometry's input with its plan built into flat; ok is false, and nothing is
// built, when the geometry or the ids are invalid (the fuzzers that need a plan skip them).
func fuzzPlan(t *testing.T, t8, k8, e8, a8, c8, mode8 uint8, raw []byte) (g Geometry, ids []int32, probs []float64, flat []int32, ok bool) {
	t.Helper()
	g, ids, probs = fuzzGeometry(t8, k8, e8, a8, c8, mode8, raw)
	if g.Validate() != nil || g.CheckIDs(ids) != nil {
		return g, ids, probs, nil, false
	}
	flat = make([]int32, g.PlanLen())
	if err := BuildPlan(flat, g, ids, probs); err != nil {
		t.Fatal(err)
	}
	return g, ids, probs, flat, true
}

// fuzzGeometry derives a small geometry and ids from fuzz input. Every id byte maps to
// [-2, E], so out-of-range and repeated ids are produced too: BuildPlan must then return an
// error, never panic.
func fuzzGeometry(t8, k8, e8, a8, c8, mode8 uint8, raw []byte) (Geometry, []int32, []float64) {
	g := Geometry{T: int(t8%40) + 1, K: int(k8%6) + 1, E: int(e8%12) + 1, A: int(a8%5) + 1}
	switch mode8 % 4 {
	case 1:
		g.Mode, g.C, g.Drop = Capacity, int(c8%20)+1, DropByPosition
	case 2:
		g.Mode, g.C, g.Drop = Capacity, int(c8%20)+1, DropByProb
	case 3:
		g.Mode, g.C, g.Drop, g.PadToCapacity = Capacity, int(c8%20)+1, DropByProb, true
	}
	ids := make([]int32, g.T*g.K)
	probs := make([]float64, g.T*g.K)
	for i := range ids {
		var b byte
		if len(raw) > 0 {
			b = raw[i%len(raw)] + byte(i/len(raw))
		}
		ids[i] = int32(int(b)%(g.E+3)) - 2
		probs[i] = float64(b%7) / 7
	}
	return g, ids, probs
}

// FuzzBuildPlan checks BuildPlan against the reference plan on arbitrary ids: either both
// agree or the input was invalid and BuildPlan said why without touching its output.
func FuzzBuildPlan(f *testing.F) {
	f.Add(uint8(5), uint8(2), uint8(4), uint8(1), uint8(3), uint8(0), []byte{3, 4, 5, 6, 7, 8})
	f.Add(uint8(30), uint8(1), uint8(3), uint8(4), uint8(5), uint8(2), []byte{2, 2, 2, 3})
	f.Add(uint8(9), uint8(3), uint8(7), uint8(2), uint8(2), uint8(3), []byte{1})
	f.Fuzz(func(t *testing.T, t8, k8, e8, a8, c8, mode8 uint8, raw []byte) {
		g, ids, probs := fuzzGeometry(t8, k8, e8, a8, c8, mode8, raw)
		flat := make([]int32, g.PlanLen())
		for i := range flat {
			flat[i] = math.MinInt32
		}
		err := BuildPlan(flat, g, ids, probs)
		valid := g.Validate() == nil && g.CheckIDs(ids) == nil
		if !valid {
			if err == nil {
				t.Fatalf("invalid input accepted: %v ids %v", g, ids)
			}
			for _, v := range flat {
				if v != math.MinInt32 {
					t.Fatal("output written on error")
				}
			}
			return
		}
		if err != nil {
			t.Fatalf("valid input rejected: %v", err)
		}
		p, _ := g.View(flat)
		counts, offsets, rowOf, tokenOf := refPlan(g, ids, probs)
		if !equalInt32(p.Counts, counts) || !equalInt32(p.Offsets, offsets) || !equalInt32(p.RowOf, rowOf) || !equalInt32(p.TokenOf, tokenOf) {
			t.Fatalf("plan differs from reference for %v ids %v", g, ids)
		}
		if err := p.Check(); err != nil {
			t.Fatalf("plan fails Check: %v", err)
		}
	})
}

// FuzzPermuteUnpermute checks the data kernels against the reference loops on fuzzed plans.
func FuzzPermuteUnpermute(f *testing.F) {
	f.Add(uint8(5), uint8(2), uint8(4), uint8(1), uint8(3), uint8(0), uint8(3), []byte{3, 4, 5, 6, 7, 8})
	f.Add(uint8(17), uint8(3), uint8(5), uint8(3), uint8(4), uint8(1), uint8(9), []byte{200, 1, 7})
	f.Fuzz(func(t *testing.T, t8, k8, e8, a8, c8, mode8, h8 uint8, raw []byte) {
		g, ids, probs, flat, ok := fuzzPlan(t, t8, k8, e8, a8, c8, mode8, raw)
		if !ok {
			return
		}
		H := int(h8%9) + 1
		p, _ := g.View(flat)
		x := make([]float64, g.T*H)
		for i := range x {
			x[i] = float64(i%13) - 6
		}
		xp := make([]float64, g.Rows()*H)
		if err := PermuteForward(xp, x, p, H); err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(xp, refPermute(x, p.RowOf, g, H)); d != 0 {
			t.Fatalf("permute differs by %g", d)
		}
		y := make([]float64, g.T*H)
		if err := UnpermuteForward(y, xp, probs, p, H); err != nil {
			t.Fatal(err)
		}
		_, _, rowOf, _ := refPlan(g, ids, probs)
		if d := maxAbsDiff(y, refUnpermute(xp, probs, rowOf, g.T, g.K, H)); d > 1e-12 {
			t.Fatalf("unpermute differs by %g", d)
		}
		dx := make([]float64, g.T*H)
		if err := PermuteBackward(dx, xp, p, H); err != nil {
			t.Fatal(err)
		}
		if d := maxAbsDiff(dx, refUnpermute(xp, nil, rowOf, g.T, g.K, H)); d > 1e-12 {
			t.Fatalf("permute backward differs by %g", d)
		}
	})
}
