package kernels

import (
	"math/rand/v2"
	"sort"
)

// Reference implementations for the tests: plain loops written from the definitions in
// docs/design.md, independent of the kernels' chunked, parallel code.

// refPlan builds counts, offsets, rowOf and tokenOf expert by expert.
func refPlan(g Geometry, ids []int32, probs []float64) (counts, offsets, rowOf, tokenOf []int32) {
	counts = make([]int32, g.E)
	offsets = make([]int32, g.E+1)
	rowOf = make([]int32, g.T*g.K)
	for i := range rowOf {
		rowOf[i] = -1
	}
	tokenOf = make([]int32, g.Rows())
	for i := range tokenOf {
		tokenOf[i] = -1
	}
	row := 0
	for e := 0; e < g.E; e++ {
		var pairs []int // (t*K+k) of expert e in token order
		for t := 0; t < g.T; t++ {
			for k := 0; k < g.K; k++ {
				if int(ids[t*g.K+k]) == e {
					pairs = append(pairs, t*g.K+k)
				}
			}
		}
		if g.Mode == Capacity && len(pairs) > g.C {
			if g.Drop == DropByPosition {
				pairs = pairs[:g.C]
			} else {
				byProb := append([]int(nil), pairs...)
				sort.Slice(byProb, func(a, b int) bool {
					pa, pb := probs[byProb[a]], probs[byProb[b]]
					if pa != pb {
						return pa > pb
					}
					return byProb[a] < byProb[b]
				})
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
			}
		}
		offsets[e] = int32(row)
		counts[e] = int32(len(pairs))
		for j, i := range pairs {
			rowOf[i] = int32(row + j)
			tokenOf[row+j] = int32(i / g.K)
		}
		seg := len(pairs)
		if g.Mode == Capacity && g.PadToCapacity {
			seg = g.C
		}
		for seg%g.A != 0 {
			seg++
		}
		row += seg
	}
	offsets[g.E] = int32(row)
	return
}

// refPermute: xp[r] = x[tokenOf[r]] or 0.
func refPermute(x []float64, tokenOf []int32, H int) []float64 {
	xp := make([]float64, len(tokenOf)*H)
	for r, t := range tokenOf {
		if t >= 0 {
			copy(xp[r*H:(r+1)*H], x[int(t)*H:(int(t)+1)*H])
		}
	}
	return xp
}

// refUnpermute: y[t] = Σ_k w·yp[rowOf[t,k]], w = probs[t,k] or 1.
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

func to32(v []float64) []float32 {
	out := make([]float32, len(v))
	for i, x := range v {
		out[i] = float32(x)
	}
	return out
}

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
