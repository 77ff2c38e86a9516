package op

import (
	"fmt"
	"sort"
	"testing"

	"github.com/gomoe/gomoe/kernels"
)

// Reference implementations for the op tests, written with plain loops, independent of package
// kernels.

// ---------------------------------------------------------------- reference plan

// refPlan is an independent plan builder: for each expert, its (t,k) pairs in token order; in
// capacity mode the first C of them (by position) or the C with the highest prob (ties to the
// lower token); kept pairs get consecutive rows of the expert's aligned segment.
type refPlanT struct {
	counts, offsets, rowOf, tokenOf []int32
}

func (r refPlanT) flat() []int32 {
	var out []int32
	out = append(out, r.counts...)
	out = append(out, r.offsets...)
	out = append(out, r.rowOf...)
	return append(out, r.tokenOf...)
}

func refRoundUp(n, a int) int {
	for n%a != 0 {
		n++
	}
	return n
}

func refPlan(g kernels.Geometry, ids []int32, probs []float64) refPlanT {
	T, K, E := g.T, g.K, g.E
	var R int
	if g.Mode == kernels.Capacity {
		R = E * refRoundUp(g.C, g.A)
	} else {
		R = T*K + E*(g.A-1)
	}
	p := refPlanT{
		counts:  make([]int32, E),
		offsets: make([]int32, E+1),
		rowOf:   make([]int32, T*K),
		tokenOf: make([]int32, R),
	}
	for i := range p.rowOf {
		p.rowOf[i] = -1
	}
	for i := range p.tokenOf {
		p.tokenOf[i] = -1
	}
	off := 0
	for e := 0; e < E; e++ {
		var pairs []int // flat (t,k) indices in token order
		for t := 0; t < T; t++ {
			for k := 0; k < K; k++ {
				if int(ids[t*K+k]) == e {
					pairs = append(pairs, t*K+k)
				}
			}
		}
		if g.Mode == kernels.Capacity && len(pairs) > g.C {
			if g.Drop == kernels.DropByProb {
				byProb := append([]int(nil), pairs...)
				sort.SliceStable(byProb, func(a, b int) bool { return probs[byProb[a]] > probs[byProb[b]] })
				keep := map[int]bool{}
				for _, i := range byProb[:g.C] {
					keep[i] = true
				}
				var kept []int
				for _, i := range pairs {
					if keep[i] {
						kept = append(kept, i)
					}
				}
				pairs = kept
			} else {
				pairs = pairs[:g.C]
			}
		}
		p.counts[e] = int32(len(pairs))
		p.offsets[e] = int32(off)
		for j, i := range pairs {
			p.rowOf[i] = int32(off + j)
			p.tokenOf[off+j] = int32(i / K)
		}
		if g.Mode == kernels.Capacity && g.PadToCapacity {
			off += refRoundUp(g.C, g.A)
		} else {
			off += refRoundUp(len(pairs), g.A)
		}
	}
	p.offsets[E] = int32(off)
	return p
}

// ---------------------------------------------------------------- reference ops (float64)

func refPermute(x []float64, rowOf []int32, T, K, R, H int) []float64 {
	xp := make([]float64, R*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			if r := rowOf[t*K+k]; r >= 0 {
				for h := 0; h < H; h++ {
					xp[int(r)*H+h] = x[t*H+h]
				}
			}
		}
	}
	return xp
}

func refPermuteBack(dxp []float64, rowOf []int32, T, K, H int) []float64 {
	dx := make([]float64, T*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			if r := rowOf[t*K+k]; r >= 0 {
				for h := 0; h < H; h++ {
					dx[t*H+h] += dxp[int(r)*H+h]
				}
			}
		}
	}
	return dx
}

func refPermuteProbs(probs []float64, rowOf []int32, R int) []float64 {
	pp := make([]float64, R)
	for i, r := range rowOf {
		if r >= 0 {
			pp[r] = probs[i]
		}
	}
	return pp
}

func refPermuteProbsBack(dpp []float64, rowOf []int32) []float64 {
	d := make([]float64, len(rowOf))
	for i, r := range rowOf {
		if r >= 0 {
			d[i] = dpp[r]
		}
	}
	return d
}

// refUnpermute: probs nil means unweighted.
func refUnpermute(yp, probs []float64, rowOf []int32, T, K, H int) []float64 {
	y := make([]float64, T*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			r := rowOf[t*K+k]
			if r < 0 {
				continue
			}
			w := 1.0
			if probs != nil {
				w = probs[t*K+k]
			}
			for h := 0; h < H; h++ {
				y[t*H+h] += w * yp[int(r)*H+h]
			}
		}
	}
	return y
}

func refUnpermuteBackRows(dy, probs []float64, rowOf []int32, T, K, R, H int) []float64 {
	dyp := make([]float64, R*H)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			r := rowOf[t*K+k]
			if r < 0 {
				continue
			}
			w := 1.0
			if probs != nil {
				w = probs[t*K+k]
			}
			for h := 0; h < H; h++ {
				dyp[int(r)*H+h] = w * dy[t*H+h]
			}
		}
	}
	return dyp
}

func refUnpermuteBackProbs(dy, yp []float64, rowOf []int32, T, K, H int) []float64 {
	d := make([]float64, T*K)
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			r := rowOf[t*K+k]
			if r < 0 {
				continue
			}
			for h := 0; h < H; h++ {
				d[t*K+k] += yp[int(r)*H+h] * dy[t*H+h]
			}
		}
	}
	return d
}

// ---------------------------------------------------------------- data helpers

func TestRefPlanHandTable(t *testing.T) {
	// The reference plan itself, on a case small enough to check by hand: T=5, K=2, E=3,
	// capacity C=2 by position, A=1: expert 0 gets pairs (0,0),(1,0),(2,1),(3,1) and keeps
	// the first two; expert 1 gets (0,1),(3,0); expert 2 gets (2,0).
	g := kernels.Geometry{T: 5, K: 2, E: 3, A: 1, Mode: kernels.Capacity, C: 2}
	p := refPlan(g, gradIDs, nil)
	want := refPlanT{
		counts:  []int32{2, 2, 1},
		offsets: []int32{0, 2, 4, 5},
		rowOf:   []int32{0, 2, 1, -1, 4, -1, 3, -1, -1, -1},
		tokenOf: []int32{0, 1, 0, 3, 2, -1},
	}
	if fmt.Sprint(p) != fmt.Sprint(want) {
		t.Fatalf("refPlan = %v, want %v", p, want)
	}
}
