package kernels

import (
	"math/rand/v2"
	"testing"
)

// permNamed is a named float32 type: the row loops' SIMD path (gonum's axpy) does not take it,
// so they run in Go.
type permNamed float32

// TestPermuteUnpermuteNamedFloatType: UnpermuteForward and PermuteBackward on a named float
// type give what they give on float32, bit for bit. The first kept slot of every token used to
// be lost on amd64: the row loop cleared the output row for the SIMD axpy, which declined the
// named type, and nothing wrote the row before the later slots were added to it.
func TestPermuteUnpermuteNamedFloatType(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	g := Geometry{T: 7, K: 2, E: 3, A: 2}
	H := 5
	ids := randomIDs(rng, g.T, g.K, g.E, 0.2)
	flat := make([]int32, g.PlanLen())
	if err := BuildPlan[float64](flat, g, ids, nil); err != nil {
		t.Fatal(err)
	}
	p, _ := g.View(flat)
	R := g.Rows()
	yp32, probs32 := to32(randFloats(rng, R*H)), to32(randFloats(rng, g.T*g.K))
	named := func(v []float32) []permNamed {
		o := make([]permNamed, len(v))
		for i, x := range v {
			o[i] = permNamed(x)
		}
		return o
	}
	same := func(what string, got []permNamed, want []float32) {
		t.Helper()
		for i := range want {
			if float32(got[i]) != want[i] {
				t.Fatalf("%s[%d] = %v, float32 gives %v", what, i, got[i], want[i])
			}
		}
	}
	for _, weighted := range []bool{true, false} {
		var pw32 []float32
		var pwN []permNamed
		if weighted {
			pw32, pwN = probs32, named(probs32)
		}
		y32, yN := make([]float32, g.T*H), make([]permNamed, g.T*H)
		if err := UnpermuteForward(y32, yp32, pw32, p, H); err != nil {
			t.Fatal(err)
		}
		if err := UnpermuteForward(yN, named(yp32), pwN, p, H); err != nil {
			t.Fatal(err)
		}
		same("unpermute y", yN, y32)
	}
	dx32, dxN := make([]float32, g.T*H), make([]permNamed, g.T*H)
	if err := PermuteBackward(dx32, yp32, p, H); err != nil {
		t.Fatal(err)
	}
	if err := PermuteBackward(dxN, named(yp32), p, H); err != nil {
		t.Fatal(err)
	}
	same("permute backward dx", dxN, dx32)
}
