// Package reftest holds the plain-loop references that the tests of package kernels and
// package op check the kernels and ops against: a plan builder and the permute and unpermute
// math in float64, written from the definitions in docs/design.md and independent of the
// kernels' chunked, parallel code; and MaxDiff, the comparison the tests of packages op and moe
// share. It does not import package kernels (whose own tests use it),
// so it has its own Geometry.
package reftest

import (
	"math"
	"sort"
)

// Geometry is what the references need of kernels.Geometry.
type Geometry struct {
	T, K, E, A    int
	Capacity      bool // capacity mode (else dropless)
	C             int  // capacity per expert
	DropByProb    bool // capacity mode drops the lowest probs (else the latest tokens)
	PadToCapacity bool // capacity mode pads every segment to C
}

// Rows is R: T·K + E·(A−1) dropless, E·roundup(C, A) in capacity mode.
func (g Geometry) Rows() int {
	if g.Capacity {
		return g.E * ((g.C + g.A - 1) / g.A * g.A)
	}
	return g.T*g.K + g.E*(g.A-1)
}

// Plan is a routing plan's four parts.
type Plan struct {
	Counts, Offsets, RowOf, TokenOf []int32
}

// Flat is the plan as one vector: counts, offsets, rowOf, tokenOf.
func (p Plan) Flat() []int32 {
	var out []int32
	out = append(out, p.Counts...)
	out = append(out, p.Offsets...)
	out = append(out, p.RowOf...)
	return append(out, p.TokenOf...)
}

// BuildPlan builds the plan expert by expert: each expert's (t,k) pairs in token order; in
// capacity mode the first C of them (by position) or the C with the highest prob (ties to the
// lower pair index); kept pairs get consecutive rows of the expert's aligned segment.
func BuildPlan(g Geometry, ids []int32, probs []float64) Plan {
	var counts, offsets, rowOf, tokenOf []int32
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
		if g.Capacity && len(pairs) > g.C {
			if !g.DropByProb {
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
		if g.Capacity && g.PadToCapacity {
			seg = g.C
		}
		for seg%g.A != 0 {
			seg++
		}
		row += seg
	}
	offsets[g.E] = int32(row)
	return Plan{counts, offsets, rowOf, tokenOf}
}

// eachSlot calls f(t, k, r) for every slot (t,k) that was not dropped, r = rowOf[t,k] >= 0, in
// t then k order (the order of every sum below).
func eachSlot(rowOf []int32, T, K int, f func(t, k, r int)) {
	for t := 0; t < T; t++ {
		for k := 0; k < K; k++ {
			if r := rowOf[t*K+k]; r >= 0 {
				f(t, k, int(r))
			}
		}
	}
}

// slotWeight is probs[i], or 1 with probs nil (unweighted).
func slotWeight(probs []float64, i int) float64 {
	if probs == nil {
		return 1
	}
	return probs[i]
}

// Permute is permute-dispatch: xp[rowOf[t,k]] = x[t], pad and unused rows 0 (R rows).
func Permute(x []float64, rowOf []int32, T, K, R, H int) []float64 {
	xp := make([]float64, R*H)
	eachSlot(rowOf, T, K, func(t, _, r int) {
		for h := 0; h < H; h++ {
			xp[r*H+h] = x[t*H+h]
		}
	})
	return xp
}

// PermuteBack is permute's gradient: dx[t] = Σ_k dxp[rowOf[t,k]].
func PermuteBack(dxp []float64, rowOf []int32, T, K, H int) []float64 {
	dx := make([]float64, T*H)
	eachSlot(rowOf, T, K, func(t, _, r int) {
		for h := 0; h < H; h++ {
			dx[t*H+h] += dxp[r*H+h]
		}
	})
	return dx
}

// PermuteProbs moves probs to rows: pp[rowOf[t,k]] = probs[t,k], other rows 0.
func PermuteProbs(probs []float64, rowOf []int32, R int) []float64 {
	pp := make([]float64, R)
	for i, r := range rowOf {
		if r >= 0 {
			pp[r] = probs[i]
		}
	}
	return pp
}

// PermuteProbsBack is PermuteProbs' gradient: dprobs[t,k] = dpp[rowOf[t,k]] or 0.
func PermuteProbsBack(dpp []float64, rowOf []int32) []float64 {
	d := make([]float64, len(rowOf))
	for i, r := range rowOf {
		if r >= 0 {
			d[i] = dpp[r]
		}
	}
	return d
}

// Unpermute: probs nil means unweighted.
func Unpermute(yp, probs []float64, rowOf []int32, T, K, H int) []float64 {
	y := make([]float64, T*H)
	eachSlot(rowOf, T, K, func(t, k, r int) {
		w := slotWeight(probs, t*K+k)
		for h := 0; h < H; h++ {
			y[t*H+h] += w * yp[r*H+h]
		}
	})
	return y
}

// UnpermuteBackRows is Unpermute's gradient to the rows: dyp[rowOf[t,k]] = w·dy[t].
func UnpermuteBackRows(dy, probs []float64, rowOf []int32, T, K, R, H int) []float64 {
	dyp := make([]float64, R*H)
	eachSlot(rowOf, T, K, func(t, k, r int) {
		w := slotWeight(probs, t*K+k)
		for h := 0; h < H; h++ {
			dyp[r*H+h] = w * dy[t*H+h]
		}
	})
	return dyp
}

// UnpermuteBackProbs is Unpermute's gradient to the probs: dprobs[t,k] = ⟨yp[rowOf[t,k]], dy[t]⟩.
func UnpermuteBackProbs(dy, yp []float64, rowOf []int32, T, K, H int) []float64 {
	d := make([]float64, T*K)
	eachSlot(rowOf, T, K, func(t, k, r int) {
		for h := 0; h < H; h++ {
			d[t*K+k] += yp[r*H+h] * dy[t*H+h]
		}
	})
	return d
}

// ---------------------------------------------------------------- data helpers

// Gemm is the row-major c = alpha·op(a)·op(b) + beta·c in float64 with plain loops: op(a) is
// m×k (a stored k×m, row stride lda, when ta), op(b) is k×n (stored n×k when tb). out is a
// copy of c (row stride ldc) with its m×n block replaced; bound is Σ_l |alpha·a·b| + |beta·c|
// of each element, for error tolerances. With beta 0, c's block is not read (it may hold NaN).
func Gemm(ta, tb bool, m, n, k int, alpha float64, a []float64, lda int, b []float64, ldb int, beta float64, c []float64, ldc int) (out, bound []float64) {
	out = append([]float64(nil), c...)
	bound = make([]float64, len(c))
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, sa float64
			for l := 0; l < k; l++ {
				var av, bv float64
				if ta {
					av = a[l*lda+i]
				} else {
					av = a[i*lda+l]
				}
				if tb {
					bv = b[j*ldb+l]
				} else {
					bv = b[l*ldb+j]
				}
				s += av * bv
				sa += math.Abs(av * bv)
			}
			o, bd := alpha*s, math.Abs(alpha)*sa
			if beta != 0 {
				o += beta * c[i*ldc+j]
				bd += math.Abs(beta * c[i*ldc+j])
			}
			out[i*ldc+j], bound[i*ldc+j] = o, bd
		}
	}
	return out, bound
}

// MaxDiff is the largest |a[i] - b[i]|, or +Inf when the lengths differ or a difference is
// NaN.
func MaxDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		d := math.Abs(a[i] - b[i])
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = math.Max(m, d)
	}
	return m
}

// FirstBitDiff returns the first index at which a and b hold different bits (so -0 differs
// from +0 and NaNs compare by payload), len of the shorter when one is a proper prefix of the
// other, or -1 when they are bitwise equal.
func FirstBitDiff[T float32 | float64](a, b []T) int {
	n := min(len(a), len(b))
	for i := 0; i < n; i++ {
		if floatBits(a[i]) != floatBits(b[i]) {
			return i
		}
	}
	if len(a) != len(b) {
		return n
	}
	return -1
}

func floatBits[T float32 | float64](v T) uint64 {
	if f, ok := any(v).(float32); ok {
		return uint64(math.Float32bits(f))
	}
	return math.Float64bits(any(v).(float64))
}
