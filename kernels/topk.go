package kernels

import (
	"fmt"
	"math"
	"sort"
	"sync"
)

// Top-k routing on the CPU, the kernel of op.TopK. The CUDA twin is (*CUDA).TopK (topk_cuda.go,
// kernel in topk.cuh), which follows the same rules and flags a NaN score in the status word
// instead of failing.

// TopK writes ids [T,K] (T = len(ids)/K) for scores [T,E]: for every token the K experts with
// the highest selection score scores[t,e] + bias[e] (bias [E], or nil for none), in descending
// order of selection score; equal scores go to the lower expert id. With groups > 1 the E
// experts split into that many equal groups: a token first keeps the kept groups with the
// highest group score (the sum of the group's top max(1, K/kept) selection scores, in
// descending order; ties to the lower group), then picks its K experts among the experts of the
// kept groups (groups = kept = 1: no groups). The scores are float64 (a float32 score converts
// exactly). A NaN score, bias or selection score, or a NaN group score (its top scores add +Inf
// and -Inf), is an error.
func TopK(ids []int32, scores, bias []float64, E, K, groups, kept int) error {
	const name = "gomoe: TopK"
	if err := CheckTopK(E, K, groups, kept); err != nil {
		return err
	}
	if err := checkWidth("TopK", "E", E, len(ids)/K); err != nil { // T·E must not wrap
		return err
	}
	switch {
	case len(ids)%K != 0 || len(scores) != len(ids)/K*E:
		return fmt.Errorf("%s: %d ids and %d scores, want T·K and T·E for K=%d E=%d", name, len(ids), len(scores), K, E)
	case bias != nil && len(bias) != E:
		return fmt.Errorf("%s: bias has %d elements, want E=%d", name, len(bias), E)
	}
	for i, v := range scores {
		if math.IsNaN(v) {
			return fmt.Errorf("%s: scores[%d,%d] is NaN", name, i/E, i%E)
		}
	}
	for i, v := range bias {
		if math.IsNaN(v) {
			return fmt.Errorf("%s: bias[%d] is NaN", name, i)
		}
	}
	if bias != nil { // +Inf score + -Inf bias (or the reverse) is a NaN selection score
		for i, v := range scores {
			if math.IsNaN(v + bias[i%E]) {
				return fmt.Errorf("%s: scores[%d,%d] + bias[%d] is NaN (%v + %v)", name, i/E, i%E, i%E, v, bias[i%E])
			}
		}
	}
	T := len(ids) / K
	if t, gi := topkGroupNaN(scores, bias, T, E, K, groups, kept); t >= 0 { // before any id is written
		return fmt.Errorf("%s: the score of group %d of token %d is NaN (its top scores add +Inf and -Inf)", name, gi, t)
	}
	topkRows(ids, scores, bias, T, E, K, groups, kept)
	return nil
}

// TopKGroups fills in what zero means for group-limited top-k: 0 groups is 1 (no groups), and
// with one group 0 kept groups is 1. Other values are returned as they are, for CheckTopK.
func TopKGroups(groups, kept int) (int, int) {
	if groups == 0 {
		groups = 1
	}
	if groups == 1 && kept == 0 {
		kept = 1
	}
	return groups, kept
}

// CheckTopK reports whether K experts per token can be chosen from E experts in groups equal
// groups of which kept are kept (TopK's rules; groups = kept = 1: no groups).
func CheckTopK(E, K, groups, kept int) error {
	const name = "gomoe: TopK"
	switch {
	case E < 1:
		return fmt.Errorf("%s: E=%d experts, want E >= 1", name, E)
	case K < 1 || K > E:
		return fmt.Errorf("%s: K=%d, want 1 <= K <= E=%d", name, K, E)
	case groups < 1 || E%groups != 0:
		return fmt.Errorf("%s: E=%d experts do not split into %d equal groups", name, E, groups)
	case kept < 1 || kept > groups:
		return fmt.Errorf("%s: GroupsKept=%d, want 1 <= GroupsKept <= Groups=%d", name, kept, groups)
	case K > kept*(E/groups):
		return fmt.Errorf("%s: K=%d experts do not fit in %d kept groups of %d experts", name, K, kept, E/groups)
	}
	return nil
}

// topkGroupScore is the score of group gi of a token's selection scores sel: the sum of the
// group's top per scores in descending order (grp: scratch of the group's size).
func topkGroupScore(sel, grp []float64, gi, gsize, per int) float64 {
	grp = append(grp[:0], sel[gi*gsize:(gi+1)*gsize]...)
	sort.Sort(sort.Reverse(sort.Float64Slice(grp)))
	var s float64
	for _, v := range grp[:min(per, gsize)] {
		s += v
	}
	return s
}

// topkGroupNaN returns the first token and group whose group score is NaN, or (-1, -1). A
// NaN there needs a -Inf among the group's selection scores (they hold no NaN: TopK checked),
// so only such groups are scored.
func topkGroupNaN(scores, bias []float64, T, E, K, groups, kept int) (nanT, nanG int) {
	var mu sync.Mutex
	nanT, nanG = -1, -1
	if groups == 1 {
		return nanT, nanG
	}
	gsize := E / groups
	per := max(1, K/kept)
	topkParallel(T, func(lo, hi int) {
		sel, grp := make([]float64, E), make([]float64, 0, gsize)
		for t := lo; t < hi; t++ {
			for e, v := range scores[t*E : (t+1)*E] {
				sel[e] = v
				if bias != nil {
					sel[e] += bias[e]
				}
			}
			for gi := 0; gi < groups; gi++ {
				hasNegInf := false
				for _, v := range sel[gi*gsize : (gi+1)*gsize] {
					hasNegInf = hasNegInf || math.IsInf(v, -1)
				}
				if hasNegInf && math.IsNaN(topkGroupScore(sel, grp, gi, gsize, per)) {
					mu.Lock()
					if nanT < 0 || t < nanT {
						nanT, nanG = t, gi
					}
					mu.Unlock()
					break
				}
			}
		}
	})
	return nanT, nanG
}

// topkRows fills ids [T,K] (work split over rows in parallel blocks); no group score is NaN
// (topkGroupNaN).
func topkRows(ids []int32, scores, bias []float64, T, E, K, groups, kept int) {
	gsize := E / groups
	per := max(1, K/kept) // the number of top scores summed into a group's score
	topkParallel(T, func(lo, hi int) {
		sel := make([]float64, E)
		order := make([]int, E)
		gscore := make([]float64, groups)
		gorder := make([]int, groups)
		grp := make([]float64, 0, gsize)
		allowed := make([]bool, E)
		less := func(v []float64) func(a, b int) bool {
			return func(a, b int) bool { // descending value, ties to the lower index
				if v[order[a]] != v[order[b]] {
					return v[order[a]] > v[order[b]]
				}
				return order[a] < order[b]
			}
		}
		for t := lo; t < hi; t++ {
			row := scores[t*E : (t+1)*E]
			for e := range sel {
				sel[e] = row[e]
				if bias != nil {
					sel[e] += bias[e]
				}
				allowed[e] = true
			}
			if groups > 1 {
				for gi := 0; gi < groups; gi++ {
					gscore[gi] = topkGroupScore(sel, grp, gi, gsize, per)
					gorder[gi] = gi
				}
				sort.SliceStable(gorder, func(a, b int) bool { return gscore[gorder[a]] > gscore[gorder[b]] })
				for e := range allowed {
					allowed[e] = false
				}
				for _, gi := range gorder[:kept] {
					for e := gi * gsize; e < (gi+1)*gsize; e++ {
						allowed[e] = true
					}
				}
			}
			order = order[:0]
			for e := 0; e < E; e++ {
				if allowed[e] {
					order = append(order, e)
				}
			}
			sort.Slice(order, less(sel))
			for k := 0; k < K; k++ {
				ids[t*K+k] = int32(order[k])
			}
			order = order[:E]
		}
	})
}

// topkParallel runs f over blocks of rows; the split never changes a result. With no rows it
// does not call f, whose per-call buffers hold E values (an E of 2^36 with no tokens must not
// ask for them).
func topkParallel(T int, f func(lo, hi int)) {
	const block = 256
	if T <= 0 {
		return
	}
	if T <= block {
		f(0, T)
		return
	}
	n := (T + block - 1) / block
	runTasks(min(4, n), n, func(b int) { f(b*block, min(T, (b+1)*block)) }) // 4 goroutines
}
