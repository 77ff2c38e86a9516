package kernels

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
)

// The tests' references are package internal/reftest's (shared with package op's tests);
// these adapt them to this package's types, beside small helpers.

// refGeo is g for package reftest's references.
func refGeo(g Geometry) reftest.Geometry {
	return reftest.Geometry{T: g.T, K: g.K, E: g.E, A: g.A, Capacity: g.Mode == Capacity, C: g.C,
		DropByProb: g.Drop == DropByProb, PadToCapacity: g.PadToCapacity}
}

// refPlan is reftest.BuildPlan's four parts.
func refPlan(g Geometry, ids []int32, probs []float64) (counts, offsets, rowOf, tokenOf []int32) {
	p := reftest.BuildPlan(refGeo(g), ids, probs)
	return p.Counts, p.Offsets, p.RowOf, p.TokenOf
}

// refPermute is reftest.Permute on g's rows.
func refPermute(x []float64, rowOf []int32, g Geometry, H int) []float64 {
	return reftest.Permute(x, rowOf, g.T, g.K, g.Rows(), H)
}

// refUnpermute is reftest.Unpermute.
var refUnpermute = reftest.Unpermute

// randomIDs draws, for each token, K distinct experts (and a fraction of -1 slots).
func randomIDs(rng *rand.Rand, T, K, E int, dropFrac float64) []int32 {
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(perm[k])
			if rng.Float64() < dropFrac {
				ids[t*K+k] = -1
			}
		}
	}
	return ids
}

func randFloats(rng *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.Float64()*2 - 1
	}
	return v
}

func to32(v []float64) []float32 { return gmmConv[float32](v) }

func to64[F Float](v []F) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func equalInt32(a, b []int32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// nnNear fails unless got and want have the same length and agree within tol element by
// element (NaN where want is NaN) — the layer kernels' tests (bias_, relu_, rmsnorm_,
// cross_entropy_ and embedding_test.go).
func nnNear(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if math.IsNaN(want[i]) != math.IsNaN(got[i]) || math.Abs(got[i]-want[i]) > tol {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}
