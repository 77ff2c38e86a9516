package kernels

import (
	"fmt"
	"math"
	"sort"

	"github.com/gomoe/gomoe/internal/hostmem"
)

// Mode selects how the routing plan sizes each expert's segment.
type Mode int32

const (
	// Dropless keeps every (token, slot) pair that names an expert. Each expert's segment holds
	// exactly its tokens, padded up to a multiple of the alignment A. The permuted buffer has the
	// static upper bound R = T·K + E·(A−1) rows.
	Dropless Mode = iota
	// Capacity keeps at most C rows per expert and drops the rest according to the DropPolicy.
	// The permuted buffer has R = E·roundup(C, A) rows.
	Capacity
)

func (m Mode) String() string {
	switch m {
	case Dropless:
		return "dropless"
	case Capacity:
		return "capacity"
	}
	return fmt.Sprintf("Mode(%d)", int32(m))
}

// DropPolicy chooses which pairs an over-full expert drops in Capacity mode. It is gomoe's one
// drop-policy type: package moe's DropPolicy is this type, and its DropByPosition and
// DropByProb are these constants.
//
// The zero DropPolicy names no policy: it stands for the default of what holds it. In a
// Geometry it is DropByPosition (Geometry.DropPolicy), which needs no probs; in a moe.Config
// it is DropByProb (moe's default). The constants are not zero, so that each keeps one value
// everywhere.
type DropPolicy int32

const (
	// DropByPosition keeps the first C pairs of each expert in token order, whatever their
	// slot k (Megatron's "position" drop policy; Switch's, with K = 1). GShard, DeepSpeed's
	// top-2 gating and Tutel order by slot first (every token's first choice before any
	// second choice): for K > 1 they can keep another pair.
	DropByPosition DropPolicy = 1
	// DropByProb keeps the C pairs with the highest router probability; ties go to the lower
	// token index. Needs the probs.
	DropByProb DropPolicy = 2
)

// String returns "position", "prob", or "default" for the zero DropPolicy.
func (p DropPolicy) String() string {
	switch p {
	case 0:
		return "default"
	case DropByPosition:
		return "position"
	case DropByProb:
		return "prob"
	}
	return fmt.Sprintf("DropPolicy(%d)", int32(p))
}

// Geometry is everything that fixes the shape of a routing plan: T tokens, K slots per token,
// E experts, alignment A, and in Capacity mode the capacity C and drop policy. It is static:
// Gorgonia ops carry it as a parameter and every buffer size follows from it.
type Geometry struct {
	T, K, E int
	// A is the alignment: every expert segment starts at a multiple of A rows. A >= 1.
	A int
	// Mode is Dropless or Capacity.
	Mode Mode
	// C is the per-expert capacity (Capacity mode only; must be >= 1 there, 0 otherwise).
	C int
	// Drop is the drop policy (Capacity mode only). Zero is DropByPosition: see
	// Geometry.DropPolicy.
	Drop DropPolicy
	// PadToCapacity (Capacity mode only) gives every expert a fixed segment of roundup(C, A)
	// rows, GShard style, so offsets[e] = e·roundup(C, A). Otherwise segments are packed
	// (roundup(count, A) rows each) like in Dropless mode.
	PadToCapacity bool
}

// DropPolicy is the drop policy that g applies: g.Drop, or DropByPosition where g.Drop is
// zero.
func (g Geometry) DropPolicy() DropPolicy {
	if g.Drop == 0 {
		return DropByPosition
	}
	return g.Drop
}

// MaxRows is the largest permuted row count a plan may have: row ids are int32.
const MaxRows = math.MaxInt32

func roundUp(n, a int) int {
	if a < 1 { // an invalid geometry (Validate rejects it): never divide by zero
		return n
	}
	return (n + a - 1) / a * a
}

// Validate reports whether g describes a plan that can be built.
func (g Geometry) Validate() error {
	switch {
	case g.T < 1:
		return fmt.Errorf("gomoe: plan: T=%d tokens, want T >= 1", g.T)
	case g.E < 1:
		return fmt.Errorf("gomoe: plan: E=%d experts, want E >= 1", g.E)
	case g.K < 1:
		return fmt.Errorf("gomoe: plan: K=%d slots per token, want K >= 1", g.K)
	case g.K > g.E:
		return fmt.Errorf("gomoe: plan: K=%d > E=%d: a token cannot pick more distinct experts than exist", g.K, g.E)
	case g.A < 1:
		return fmt.Errorf("gomoe: plan: alignment A=%d, want A >= 1 (1: segments unpadded)", g.A)
	case g.E > MaxRows:
		return fmt.Errorf("gomoe: plan: E=%d experts exceed the int32 expert id limit %d", g.E, MaxRows)
	case g.Drop != 0 && g.Drop != DropByPosition && g.Drop != DropByProb:
		return fmt.Errorf("gomoe: plan: unknown drop policy %v", g.Drop)
	}
	switch g.Mode {
	case Dropless:
		if g.C != 0 {
			return fmt.Errorf("gomoe: plan: capacity C=%d given in dropless mode", g.C)
		}
		if g.PadToCapacity {
			return fmt.Errorf("gomoe: plan: PadToCapacity given in dropless mode (it needs capacity mode)")
		}
	case Capacity:
		if g.C < 1 {
			return fmt.Errorf("gomoe: plan: capacity C=%d, want C >= 1 in capacity mode", g.C)
		}
	default:
		return fmt.Errorf("gomoe: plan: unknown mode %v", g.Mode)
	}
	// Size checks in int64/float so that overflow cannot hide a too-large plan.
	r := float64(g.T)*float64(g.K) + float64(g.E)*float64(g.A-1)
	if g.Mode == Capacity { // roundup(C, A) in float: C near MaxInt must not wrap around
		r = float64(g.E) * math.Ceil(float64(g.C)/float64(g.A)) * float64(g.A)
	}
	if r > MaxRows || float64(g.T)*float64(g.K) > MaxRows {
		return fmt.Errorf("gomoe: plan: %.0f permuted rows (T=%d K=%d E=%d A=%d C=%d) exceed the int32 row id limit %d", r, g.T, g.K, g.E, g.A, g.C, MaxRows)
	}
	// The plan vector and BuildPlan's scratch (per-expert counts and ranks, at most T·K + 2·E
	// more int32) must fit in memory: a failed allocation is fatal, not an error. Validate
	// runs in every kernel that takes a plan, so the error's text is made only when it fails.
	if b := 4 * (4*float64(g.E) + 1 + 2*float64(g.T)*float64(g.K) + r); b > float64(hostmem.Total()) {
		return hostmem.Check(fmt.Sprintf("gomoe: plan: the plan of %v and its scratch", g), b)
	}
	return nil
}

// Rows is R, the static number of rows of the permuted buffer.
func (g Geometry) Rows() int {
	if g.Mode == Capacity {
		return g.E * roundUp(g.C, g.A)
	}
	return g.T*g.K + g.E*(g.A-1)
}

// The flat plan layout. A plan is one int32 vector of length PlanLen() holding, in order:
//
//	counts  [E]    rows of real tokens per expert
//	offsets [E+1]  first row of each expert's segment; offsets[E] = rows in use (<= R)
//	rowOf   [T*K]  destination row of pair (t,k), -1 if the pair is dropped or names no expert
//	tokenOf [R]    source token of each row, -1 for pad and unused rows
//
// Segments are in expert order; inside a segment rows are in ascending token order. Each
// segment starts at a multiple of A.

// PlanLen is the length of the flat int32 plan vector.
func (g Geometry) PlanLen() int { return g.E + (g.E + 1) + g.T*g.K + g.Rows() }

// Plan is a typed view of a flat plan vector. Its slices alias the flat vector.
type Plan struct {
	Geometry
	Counts  []int32 // [E]
	Offsets []int32 // [E+1]
	RowOf   []int32 // [T*K], row-major (t, k)
	TokenOf []int32 // [R]
}

// View splits a flat plan vector of length g.PlanLen() into its parts. g must be valid.
func (g Geometry) View(flat []int32) (Plan, error) {
	if err := g.Validate(); err != nil {
		return Plan{}, err
	}
	if len(flat) != g.PlanLen() {
		return Plan{}, fmt.Errorf("gomoe: plan vector has %d entries, want %d for %v", len(flat), g.PlanLen(), g)
	}
	e, tk := g.E, g.T*g.K
	return Plan{
		Geometry: g,
		Counts:   flat[:e:e],
		Offsets:  flat[e : 2*e+1 : 2*e+1],
		RowOf:    flat[2*e+1 : 2*e+1+tk : 2*e+1+tk],
		TokenOf:  flat[2*e+1+tk:],
	}, nil
}

func (g Geometry) String() string {
	s := fmt.Sprintf("T=%d K=%d E=%d A=%d %v", g.T, g.K, g.E, g.A, g.Mode)
	if g.Mode == Capacity {
		s += fmt.Sprintf(" C=%d drop=%v pad=%v", g.C, g.DropPolicy(), g.PadToCapacity)
	}
	return s
}

// CheckIDs validates the expert ids [T,K] of a valid geometry (Validate's errors first): each is
// -1 or in [0,E), and no expert appears twice in one token's row (a top-k router never repeats
// one; a repeat is almost always a bug).
func (g Geometry) CheckIDs(ids []int32) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if len(ids) != g.T*g.K {
		return fmt.Errorf("gomoe: plan: ids has %d entries, want T*K = %d*%d", len(ids), g.T, g.K)
	}
	for t := 0; t < g.T; t++ {
		row := ids[t*g.K : (t+1)*g.K]
		for k, e := range row {
			if e < -1 || int(e) >= g.E {
				return fmt.Errorf("gomoe: plan: ids[%d,%d] = %d is out of range [-1, %d)", t, k, e, g.E)
			}
			if e < 0 {
				continue
			}
			for j := 0; j < k; j++ {
				if row[j] == e {
					return fmt.Errorf("gomoe: plan: token %d names expert %d twice (slots %d and %d)", t, e, j, k)
				}
			}
		}
	}
	return nil
}

// BuildPlan fills the flat plan vector dst (length g.PlanLen()) from the expert ids [T,K].
// probs [T,K] is needed only for Capacity mode with DropByProb (it may be nil otherwise) and is
// read as float64. On error dst is left untouched. The work is O(T·K) (plus a sort of the
// over-full experts' pairs under DropByProb) and parallel over GOMAXPROCS for large T.
func BuildPlan[F Float](dst []int32, g Geometry, ids []int32, probs []F) error {
	if err := g.Validate(); err != nil {
		return err
	}
	if len(dst) != g.PlanLen() {
		return fmt.Errorf("gomoe: plan: output has %d entries, want %d", len(dst), g.PlanLen())
	}
	if err := g.CheckIDs(ids); err != nil {
		return err
	}
	if err := checkDisjoint("plan", []span{spanOf("dst", dst)}, []span{spanOf("ids", ids), spanOf("probs", probs)}); err != nil {
		return err
	}
	needProbs := g.Mode == Capacity && g.Drop == DropByProb
	if needProbs {
		if len(probs) != g.T*g.K {
			return fmt.Errorf("gomoe: plan: drop by prob needs probs [T,K] = %d entries, got %d", g.T*g.K, len(probs))
		}
		for i, p := range probs {
			if math.IsNaN(float64(p)) {
				return fmt.Errorf("gomoe: plan: probs[%d,%d] is NaN", i/g.K, i%g.K)
			}
		}
	}
	p, _ := g.View(dst)
	E, K := g.E, g.K

	// Pass 1: per-chunk counts per expert (chunks of tokens, deterministic partition).
	chunks := chunkCount(g.T, 4096/K+1)
	// Keep the chunks' per-expert counts within T·K + E entries: with many experts and few
	// tokens per chunk they would otherwise outgrow the plan (the result does not depend on
	// the number of chunks).
	chunks = max(1, min(chunks, g.T*K/E))
	chunkCounts := make([]int32, chunks*E)
	parallelFor(chunks, func(c int) {
		lo, hi := chunkRange(g.T, chunks, c)
		cc := chunkCounts[c*E : (c+1)*E]
		for _, e := range ids[lo*K : hi*K] {
			if e >= 0 {
				cc[e]++
			}
		}
	})
	// Pass 2: exclusive scan over chunks for each expert -> rank base of each chunk.
	load := make([]int32, E)
	for e := 0; e < E; e++ {
		var s int32
		for c := 0; c < chunks; c++ {
			v := chunkCounts[c*E+e]
			chunkCounts[c*E+e] = s
			s += v
		}
		load[e] = s
	}
	// Capacity, drop by prob: decide which pairs each expert keeps (kept[i], keepByProb); drop
	// by position keeps each expert's first C pairs in token order (pass 3).
	var kept []bool
	if g.Mode == Capacity && g.Drop == DropByProb {
		kept = keepByProb(g, ids, probs, load)
	}
	// Counts and offsets.
	var off int32
	for e := 0; e < E; e++ {
		n := load[e]
		if g.Mode == Capacity && n > int32(g.C) {
			n = int32(g.C)
		}
		p.Counts[e] = n
		p.Offsets[e] = off
		if g.Mode == Capacity && g.PadToCapacity {
			off += int32(roundUp(g.C, g.A))
		} else {
			off += int32(roundUp(int(n), g.A))
		}
	}
	p.Offsets[E] = off
	for i := range p.TokenOf {
		p.TokenOf[i] = -1
	}
	// Pass 3: assign rows. Under DropByProb the rank among kept pairs must skip dropped pairs
	// of earlier chunks, so that case runs sequentially; the others are parallel by chunk.
	if kept != nil {
		rank := make([]int32, E)
		for i, e := range ids {
			p.RowOf[i] = -1
			if e < 0 || !kept[i] {
				continue
			}
			r := p.Offsets[e] + rank[e]
			rank[e]++
			p.RowOf[i] = r
			p.TokenOf[r] = int32(i / K)
		}
		return nil
	}
	limit := int32(math.MaxInt32)
	if g.Mode == Capacity {
		limit = int32(g.C)
	}
	parallelFor(chunks, func(c int) {
		lo, hi := chunkRange(g.T, chunks, c)
		rank := append([]int32(nil), chunkCounts[c*E:(c+1)*E]...)
		for i := lo * K; i < hi*K; i++ {
			e := ids[i]
			p.RowOf[i] = -1
			if e < 0 {
				continue
			}
			rk := rank[e]
			rank[e]++
			if rk >= limit {
				continue
			}
			r := p.Offsets[e] + rk
			p.RowOf[i] = r
			p.TokenOf[r] = int32(i / K)
		}
	})
	return nil
}

// keepByProb marks, for every over-full expert, the C pairs with the highest prob (ties to the
// lower token index) as kept; every pair of an expert within capacity is kept.
func keepByProb[F Float](g Geometry, ids []int32, probs []F, load []int32) []bool {
	kept := make([]bool, len(ids))
	var over [][]int32
	overOf := make([]int, g.E)
	for e := range overOf {
		overOf[e] = -1
		if load[e] > int32(g.C) {
			overOf[e] = len(over)
			over = append(over, make([]int32, 0, load[e]))
		}
	}
	for i, e := range ids {
		if e < 0 {
			continue
		}
		if j := overOf[e]; j >= 0 {
			over[j] = append(over[j], int32(i))
		} else {
			kept[i] = true
		}
	}
	parallelFor(len(over), func(j int) {
		list := over[j]
		sort.SliceStable(list, func(a, b int) bool { // stable: equal probs keep token order
			return float64(probs[list[a]]) > float64(probs[list[b]])
		})
		for _, i := range list[:g.C] {
			kept[i] = true
		}
	})
	return kept
}

// Check validates a plan that did not come from BuildPlan (for example a plan tensor a caller
// filled by hand): offsets are non-decreasing, aligned and within R, every row id is -1 or in
// [0,R), every token id is -1 or in [0,T), rowOf and tokenOf agree, and the rows holding a
// token are exactly the first counts[e] rows of each segment, each pointed to by one slot.
// Every permute and unpermute kernel runs Check first (about 0.2-0.4 % of a permute at
// H >= 4096), so a corrupt plan gives an error, never a crash or a silent write.
func (p Plan) Check() error {
	if err := p.Geometry.Validate(); err != nil {
		return err
	}
	R := int32(p.Rows())
	if len(p.Counts) != p.E || len(p.Offsets) != p.E+1 || len(p.RowOf) != p.T*p.K || len(p.TokenOf) != int(R) {
		return fmt.Errorf("gomoe: plan: parts have the wrong lengths for %v", p.Geometry)
	}
	for e := 0; e < p.E; e++ {
		o, n := p.Offsets[e], p.Counts[e]
		if o < 0 || int(o)%p.A != 0 || n < 0 || int64(o)+int64(n) > int64(p.Offsets[e+1]) {
			return fmt.Errorf("gomoe: plan: expert %d has offset %d, count %d, next offset %d: not a valid aligned segment", e, o, n, p.Offsets[e+1])
		}
		if p.Mode == Capacity && int(n) > p.C {
			return fmt.Errorf("gomoe: plan: expert %d has count %d, more than the capacity C=%d", e, n, p.C)
		}
	}
	if p.Offsets[p.E] > R {
		return fmt.Errorf("gomoe: plan: offsets[E] = %d exceeds R = %d", p.Offsets[p.E], R)
	}
	for r, t := range p.TokenOf {
		if t < -1 || int(t) >= p.T {
			return fmt.Errorf("gomoe: plan: tokenOf[%d] = %d is out of range [-1, %d)", r, t, p.T)
		}
	}
	for i, r := range p.RowOf {
		if r < -1 || r >= R {
			return fmt.Errorf("gomoe: plan: rowOf[%d,%d] = %d is out of range [-1, %d)", i/p.K, i%p.K, r, R)
		}
		if r >= 0 && p.TokenOf[r] != int32(i/p.K) {
			return fmt.Errorf("gomoe: plan: rowOf[%d,%d] = %d but tokenOf[%d] = %d", i/p.K, i%p.K, r, r, p.TokenOf[r])
		}
		for j := i - i%p.K; j < i; j++ {
			if r >= 0 && p.RowOf[j] == r {
				return fmt.Errorf("gomoe: plan: token %d sends slots %d and %d to the same row %d", i/p.K, j%p.K, i%p.K, r)
			}
		}
	}
	// The rows that hold a token are exactly the first counts[e] rows of each segment, and
	// every one of them is some slot's row: no kernel then leaves a row unwritten or treats a
	// token's row as padding.
	held := 0
	for e := -1; e <= p.E; e++ {
		lo, n, hi := 0, 0, int(p.Offsets[0]) // rows before the first segment
		switch {
		case e == p.E: // rows past offsets[E]
			lo, hi = int(p.Offsets[p.E]), int(R)
		case e >= 0:
			lo, n, hi = int(p.Offsets[e]), int(p.Counts[e]), int(p.Offsets[e+1])
		}
		for r := lo; r < hi; r++ {
			if (r < lo+n) != (p.TokenOf[r] >= 0) {
				return fmt.Errorf("gomoe: plan: row %d has tokenOf = %d but lies %s", r, p.TokenOf[r], rowPlace(e, p.E, r < lo+n))
			}
		}
		held += n
	}
	slots := 0
	for _, r := range p.RowOf {
		if r >= 0 {
			slots++
		}
	}
	if slots != held {
		return fmt.Errorf("gomoe: plan: %d slots have a row but the counts sum to %d", slots, held)
	}
	return nil
}

// rowPlace describes where a row lies for Check's errors.
func rowPlace(e, E int, real bool) string {
	switch {
	case e < 0:
		return "before the first segment"
	case e == E:
		return "past offsets[E]"
	case real:
		return fmt.Sprintf("among expert %d's real rows", e)
	}
	return fmt.Sprintf("in expert %d's padding", e)
}
