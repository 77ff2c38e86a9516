package op

import (
	"fmt"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	"github.com/gomoe/gomoe/kernels"
)

// The references are package internal/reftest's (shared with package kernels' tests); these
// adapt them to this package's types.

type refPlanT = reftest.Plan

// refPlan is reftest.BuildPlan on g.
func refPlan(g kernels.Geometry, ids []int32, probs []float64) refPlanT {
	return reftest.BuildPlan(reftest.Geometry{T: g.T, K: g.K, E: g.E, A: g.A, Capacity: g.Mode == kernels.Capacity,
		C: g.C, DropByProb: g.Drop == kernels.DropByProb, PadToCapacity: g.PadToCapacity}, ids, probs)
}

var (
	refPermute            = reftest.Permute
	refPermuteBack        = reftest.PermuteBack
	refPermuteProbs       = reftest.PermuteProbs
	refPermuteProbsBack   = reftest.PermuteProbsBack
	refUnpermute          = reftest.Unpermute
	refUnpermuteBackRows  = reftest.UnpermuteBackRows
	refUnpermuteBackProbs = reftest.UnpermuteBackProbs
)

func TestRefPlanHandTable(t *testing.T) {
	// The reference plan itself, on a case small enough to check by hand: T=5, K=2, E=3,
	// capacity C=2 by position, A=1: expert 0 gets pairs (0,0),(1,0),(2,1),(3,1) and keeps
	// the first two; expert 1 gets (0,1),(3,0); expert 2 gets (2,0).
	g := kernels.Geometry{T: 5, K: 2, E: 3, A: 1, Mode: kernels.Capacity, C: 2}
	p := refPlan(g, gradIDs, nil)
	want := refPlanT{
		Counts:  []int32{2, 2, 1},
		Offsets: []int32{0, 2, 4, 5},
		RowOf:   []int32{0, 2, 1, -1, 4, -1, 3, -1, -1, -1},
		TokenOf: []int32{0, 1, 0, 3, 2, -1},
	}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Fatalf("refPlan = %v, want %v", p, want)
	}
}
