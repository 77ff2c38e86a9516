package kernels

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/internal/reftest"
)

// The bad-input table of docs/errors.md for package kernels: every row returns an error that
// names the problem, nothing panics (also not inside the kernels' goroutines: T is large
// enough in some rows to make them parallel), and no buffer the caller passed, input or
// output, is written.

// relBufs are the buffers of one call, all filled with a sentinel pattern.
type relBufs struct {
	x, xp, y, yp, probs, pp, dy, dyp, dprobs, w, z []float64
	flat                                           []int32
}

func (b *relBufs) all() [][]float64 {
	return [][]float64{b.x, b.xp, b.y, b.yp, b.probs, b.pp, b.dy, b.dyp, b.dprobs, b.w, b.z}
}

func (b *relBufs) clone() *relBufs {
	c := *b
	c.flat = append([]int32(nil), b.flat...)
	for _, v := range []*[]float64{&c.x, &c.xp, &c.y, &c.yp, &c.probs, &c.pp, &c.dy, &c.dyp, &c.dprobs, &c.w, &c.z} {
		*v = append([]float64(nil), *v...)
	}
	return &c
}

func sameBits(a, b []float64) bool { return reftest.FirstBitDiff(a, b) < 0 }

// relSetup builds a good plan for g with T tokens and buffers for H (and N for the grouped
// matmul), every float filled with a sentinel.
func relSetup(t *testing.T, g Geometry, H, N int) (Plan, *relBufs) {
	t.Helper()
	ids := make([]int32, g.T*g.K)
	for i := range ids {
		ids[i] = int32((i/g.K + i%g.K) % g.E)
	}
	b := &relBufs{flat: make([]int32, g.PlanLen())}
	if err := BuildPlan[float64](b.flat, g, ids, nil); err != nil {
		t.Fatal(err)
	}
	p, err := g.View(b.flat)
	if err != nil {
		t.Fatal(err)
	}
	R := g.Rows()
	fill := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = 0.25 + float64(i%7)
		}
		return v
	}
	b.x, b.xp, b.y, b.yp = fill(g.T*H), fill(R*H), fill(g.T*H), fill(R*H)
	b.probs, b.pp, b.dy, b.dyp, b.dprobs = fill(g.T*g.K), fill(R), fill(g.T*H), fill(R*H), fill(g.T*g.K)
	b.w, b.z = fill(g.E*H*N), fill(R*N)
	return p, b
}

type relKernelCase struct {
	name string
	// plan edits the good plan (nil: keep it); it gets a copy, so edits never reach relBufs.
	plan func(p Plan) Plan
	call func(p Plan, b *relBufs) error
	want []string
}

// corrupt returns a copy of p with one edit applied to copies of its parts.
func corrupt(p Plan, edit func(q *Plan)) Plan {
	q := p
	q.Counts = append([]int32(nil), p.Counts...)
	q.Offsets = append([]int32(nil), p.Offsets...)
	q.RowOf = append([]int32(nil), p.RowOf...)
	q.TokenOf = append([]int32(nil), p.TokenOf...)
	edit(&q)
	return q
}

func relKernelCases(g Geometry, H, N int) []relKernelCase {
	R := g.Rows()
	type kernel struct {
		name string
		call func(p Plan, b *relBufs) error
	}
	kernels := []kernel{
		{"PermuteForward", func(p Plan, b *relBufs) error { return PermuteForward(b.xp, b.x, p, H) }},
		{"PermuteProbsForward", func(p Plan, b *relBufs) error { return PermuteProbsForward(b.pp, b.probs, p) }},
		{"PermuteBackward", func(p Plan, b *relBufs) error { return PermuteBackward(b.x, b.dyp, p, H) }},
		{"PermuteProbsBackward", func(p Plan, b *relBufs) error { return PermuteProbsBackward(b.dprobs, b.pp, p) }},
		{"UnpermuteForward", func(p Plan, b *relBufs) error { return UnpermuteForward(b.y, b.yp, b.probs, p, H) }},
		{"UnpermuteBackward", func(p Plan, b *relBufs) error { return UnpermuteBackward(b.dyp, b.dprobs, b.dy, b.yp, b.probs, p, H) }},
		{"GroupedMatMulForward", func(p Plan, b *relBufs) error { return GroupedMatMulForward(b.z, b.xp, b.w, p, H, N) }},
		{"GroupedMatMulBackwardRows", func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardRows(b.dyp, b.z, b.w, p, H, N, true)
		}},
		{"GroupedMatMulBackwardWeights", func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardWeights(b.w, b.xp, b.z, p, H, N, false)
		}},
	}
	var cases []relKernelCase
	for _, k := range kernels {
		gmm := strings.HasPrefix(k.name, "Grouped")
		cases = append(cases,
			relKernelCase{k.name + "/zero Plan", func(Plan) Plan { return Plan{} }, k.call, []string{"T=0"}},
			relKernelCase{k.name + "/capacity plan with A=0", func(p Plan) Plan {
				q := p
				q.Mode, q.C, q.A = Capacity, 2, 0
				return q
			}, k.call, []string{"alignment A=0"}},
			relKernelCase{k.name + "/plan parts missing", func(p Plan) Plan { return Plan{Geometry: p.Geometry} }, k.call, []string{"plan"}},
			relKernelCase{k.name + "/offsets past R", func(p Plan) Plan {
				return corrupt(p, func(q *Plan) { q.Offsets[g.E] = int32(R + 1) })
			}, k.call, []string{fmt.Sprint(R + 1)}},
			relKernelCase{k.name + "/count past the segment", func(p Plan) Plan {
				return corrupt(p, func(q *Plan) { q.Counts[0] += int32(R) })
			}, k.call, []string{"expert 0"}},
		)
		if !gmm { // the grouped matmul reads only counts and offsets
			cases = append(cases,
				relKernelCase{k.name + "/rowOf past R", func(p Plan) Plan {
					return corrupt(p, func(q *Plan) { q.RowOf[len(q.RowOf)-1] = int32(R) })
				}, k.call, []string{"out of range"}},
				relKernelCase{k.name + "/rowOf < -1", func(p Plan) Plan {
					return corrupt(p, func(q *Plan) { q.RowOf[0] = -3 })
				}, k.call, []string{"rowOf[0,0] = -3"}},
				relKernelCase{k.name + "/tokenOf past T", func(p Plan) Plan {
					return corrupt(p, func(q *Plan) { q.TokenOf[0] = int32(g.T) })
				}, k.call, []string{"tokenOf[0]"}},
				relKernelCase{k.name + "/row held by no slot", func(p Plan) Plan {
					return corrupt(p, func(q *Plan) { q.RowOf[0] = -1 }) // tokenOf still names token 0
				}, k.call, []string{"slots have a row but the counts sum to"}},
				relKernelCase{k.name + "/token in a pad row", func(p Plan) Plan {
					return corrupt(p, func(q *Plan) { q.TokenOf[R-1] = 0 })
				}, k.call, []string{fmt.Sprintf("row %d has tokenOf = 0", R-1)}},
			)
		}
	}
	// Wrong buffer lengths, one per buffer.
	short := func(v []float64) []float64 { return v[:len(v)-1] }
	cases = append(cases,
		relKernelCase{"PermuteForward/x short", nil, func(p Plan, b *relBufs) error { return PermuteForward(b.xp, short(b.x), p, H) }, []string{"permute: x"}},
		relKernelCase{"PermuteForward/xp short", nil, func(p Plan, b *relBufs) error { return PermuteForward(short(b.xp), b.x, p, H) }, []string{"permute: xp"}},
		relKernelCase{"PermuteForward/negative H", nil, func(p Plan, b *relBufs) error { return PermuteForward(b.xp, b.x, p, -H) }, []string{"permute: H=-3, want H >= 0"}},
		relKernelCase{"PermuteProbsForward/probs short", nil, func(p Plan, b *relBufs) error { return PermuteProbsForward(b.pp, short(b.probs), p) }, []string{"permute probs: probs"}},
		relKernelCase{"PermuteProbsForward/pp short", nil, func(p Plan, b *relBufs) error { return PermuteProbsForward(short(b.pp), b.probs, p) }, []string{"permute probs: pp"}},
		relKernelCase{"PermuteBackward/dx short", nil, func(p Plan, b *relBufs) error { return PermuteBackward(short(b.x), b.dyp, p, H) }, []string{"dx"}},
		relKernelCase{"PermuteBackward/dxp short", nil, func(p Plan, b *relBufs) error { return PermuteBackward(b.x, short(b.dyp), p, H) }, []string{"dxp"}},
		relKernelCase{"PermuteProbsBackward/dprobs short", nil, func(p Plan, b *relBufs) error { return PermuteProbsBackward(short(b.dprobs), b.pp, p) }, []string{"dprobs"}},
		relKernelCase{"UnpermuteForward/y short", nil, func(p Plan, b *relBufs) error { return UnpermuteForward(short(b.y), b.yp, b.probs, p, H) }, []string{"unpermute: y"}},
		relKernelCase{"UnpermuteForward/yp short", nil, func(p Plan, b *relBufs) error { return UnpermuteForward(b.y, short(b.yp), b.probs, p, H) }, []string{"unpermute: yp"}},
		relKernelCase{"UnpermuteForward/probs short", nil, func(p Plan, b *relBufs) error { return UnpermuteForward(b.y, b.yp, short(b.probs), p, H) }, []string{"unpermute: probs"}},
		relKernelCase{"UnpermuteBackward/dy short", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(b.dyp, b.dprobs, short(b.dy), b.yp, b.probs, p, H)
		}, []string{"dy"}},
		relKernelCase{"UnpermuteBackward/dyp short", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(short(b.dyp), b.dprobs, b.dy, b.yp, b.probs, p, H)
		}, []string{"dyp"}},
		relKernelCase{"UnpermuteBackward/dprobs without yp", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(b.dyp, b.dprobs, b.dy, nil, b.probs, p, H)
		}, []string{"yp"}},
		relKernelCase{"UnpermuteBackward/probs short", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(b.dyp, b.dprobs, b.dy, b.yp, short(b.probs), p, H)
		}, []string{"probs"}},
		relKernelCase{"GroupedMatMulForward/w short", nil, func(p Plan, b *relBufs) error { return GroupedMatMulForward(b.z, b.xp, short(b.w), p, H, N) }, []string{"w has"}},
		relKernelCase{"GroupedMatMulForward/H = 0", nil, func(p Plan, b *relBufs) error { return GroupedMatMulForward(b.z, nil, nil, p, 0, N) }, []string{"H=0"}},
		relKernelCase{"GroupedMatMulForward/N = 0", nil, func(p Plan, b *relBufs) error { return GroupedMatMulForward(nil, b.xp, nil, p, H, 0) }, []string{"N=0"}},
		relKernelCase{"GroupedMatMulBackwardRows/dz short", nil, func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardRows(b.dyp, short(b.z), b.w, p, H, N, false)
		}, []string{"dz has"}},
		relKernelCase{"GroupedMatMulBackwardWeights/dw short", nil, func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardWeights(short(b.w), b.xp, b.z, p, H, N, true)
		}, []string{"dw has"}},
	)
	// Sizes whose products wrap around int: H = 2^62 makes T·H wrap to a small number.
	const huge = 1 << 62
	cases = append(cases,
		relKernelCase{"PermuteForward/H wraps around", nil, func(p Plan, b *relBufs) error { return PermuteForward(b.xp, b.x, p, huge) }, []string{"permute: H=4611686018427387904 times", "too large"}},
		relKernelCase{"PermuteBackward/H wraps around", nil, func(p Plan, b *relBufs) error { return PermuteBackward(b.x, b.dyp, p, huge) }, []string{"permute backward: H="}},
		relKernelCase{"UnpermuteForward/H wraps around", nil, func(p Plan, b *relBufs) error { return UnpermuteForward(b.y, b.yp, b.probs, p, huge) }, []string{"unpermute: H="}},
		relKernelCase{"UnpermuteBackward/negative H", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(b.dyp, b.dprobs, b.dy, b.yp, b.probs, p, -1)
		}, []string{"unpermute backward: H=-1"}},
		relKernelCase{"GroupedMatMulForward/H·N wraps around", nil, func(p Plan, b *relBufs) error { return GroupedMatMulForward(b.z, b.xp, b.w, p, 1<<40, 1<<40) }, []string{"too large"}},
		relKernelCase{"GroupedMatMulBackwardRows/N wraps around", nil, func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardRows(b.dyp, b.z, b.w, p, H, huge, true)
		}, []string{"too large"}},
	)
	// Outputs sharing memory with an input or another output (the sizes are right, so only
	// the overlap is wrong). R >= T·K >= T·H/... here: every view below fits its buffer.
	cases = append(cases,
		relKernelCase{"PermuteForward/xp overlaps x", nil, func(p Plan, b *relBufs) error { return PermuteForward(b.xp, b.xp[:len(b.x)], p, H) }, []string{"permute: output xp overlaps input x"}},
		relKernelCase{"PermuteForward/x inside xp", nil, func(p Plan, b *relBufs) error {
			return PermuteForward(b.xp, b.xp[len(b.xp)-len(b.x):], p, H)
		}, []string{"output xp overlaps input x"}},
		relKernelCase{"PermuteProbsForward/pp overlaps probs", nil, func(p Plan, b *relBufs) error {
			return PermuteProbsForward(b.pp, b.pp[1:1+len(b.probs)], p)
		}, []string{"permute probs: output pp overlaps input probs"}},
		relKernelCase{"PermuteBackward/dx overlaps dxp", nil, func(p Plan, b *relBufs) error { return PermuteBackward(b.dyp[:len(b.x)], b.dyp, p, H) }, []string{"permute backward: output dx overlaps input dxp"}},
		relKernelCase{"PermuteProbsBackward/dprobs overlaps dpp", nil, func(p Plan, b *relBufs) error {
			return PermuteProbsBackward(b.pp[:len(b.dprobs)], b.pp, p)
		}, []string{"output dprobs overlaps input dpp"}},
		relKernelCase{"UnpermuteForward/y overlaps yp", nil, func(p Plan, b *relBufs) error { return UnpermuteForward(b.yp[:len(b.y)], b.yp, b.probs, p, H) }, []string{"unpermute: output y overlaps input yp"}},
		relKernelCase{"UnpermuteForward/y overlaps probs", nil, func(p Plan, b *relBufs) error { return UnpermuteForward(b.y, b.yp, b.y[:len(b.probs)], p, H) }, []string{"output y overlaps input probs"}},
		relKernelCase{"UnpermuteBackward/dyp overlaps dprobs", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(b.dyp, b.dyp[len(b.dyp)-len(b.dprobs):], b.dy, b.yp, b.probs, p, H)
		}, []string{"output dyp overlaps output dprobs"}},
		relKernelCase{"UnpermuteBackward/dprobs overlaps dy", nil, func(p Plan, b *relBufs) error {
			return UnpermuteBackward(b.dyp, b.dy[:len(b.dprobs)], b.dy, b.yp, b.probs, p, H)
		}, []string{"output dprobs overlaps input dy"}},
		relKernelCase{"GroupedMatMulForward/z overlaps xp", nil, func(p Plan, b *relBufs) error { return GroupedMatMulForward(b.xp[:len(b.z)], b.xp, b.w, p, H, N) }, []string{"grouped matmul forward: output z overlaps input xp"}},
		relKernelCase{"GroupedMatMulBackwardRows/dxp overlaps dz", nil, func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardRows(b.dyp, b.dyp[:len(b.z)], b.w, p, H, N, true)
		}, []string{"output dxp overlaps input dz"}},
		relKernelCase{"GroupedMatMulBackwardWeights/dw overlaps xp", nil, func(p Plan, b *relBufs) error {
			return GroupedMatMulBackwardWeights(b.xp[:len(b.w)], b.xp, b.z, p, H, N, false)
		}, []string{"output dw overlaps input xp"}},
	)
	return cases
}

func TestReliabilityKernelsBadInputs(t *testing.T) {
	// T=300 makes the data kernels parallel (rowBlock 64), so a panic there would kill the
	// test binary instead of failing one row: the checks must run before any goroutine.
	for _, g := range []Geometry{{T: 5, K: 2, E: 3, A: 2}, {T: 300, K: 2, E: 4, A: 4}} {
		const H, N = 3, 2
		for _, c := range relKernelCases(g, H, N) {
			t.Run(fmt.Sprintf("T=%d/%s", g.T, c.name), func(t *testing.T) {
				p, b := relSetup(t, g, H, N)
				if c.plan != nil {
					p = c.plan(p)
				}
				before := b.clone()
				var err error
				func() {
					defer func() {
						if r := recover(); r != nil {
							err = nil
							t.Errorf("panic: %v", r)
						}
					}()
					err = c.call(p, b)
				}()
				if err == nil {
					t.Fatalf("no error, want one mentioning %q", c.want)
				}
				for _, f := range append([]string{"gomoe: "}, c.want...) {
					if !strings.Contains(err.Error(), f) {
						t.Errorf("error %q does not mention %q", err, f)
					}
				}
				for i, v := range b.all() {
					if !sameBits(v, before.all()[i]) {
						t.Errorf("buffer %d was written although the call failed", i)
					}
				}
				for i := range b.flat {
					if b.flat[i] != before.flat[i] {
						t.Fatalf("the plan was written")
					}
				}
			})
		}
	}
}

// TestReliabilityGeometry: the sizes of an invalid geometry never panic, and View and Check
// reject it.
func TestReliabilityGeometry(t *testing.T) {
	bad := []Geometry{
		{T: 3, K: 2, E: 4, A: 0, Mode: Capacity, C: 2},
		{T: 3, K: 2, E: 4, A: -1, Mode: Capacity, C: 2, PadToCapacity: true},
		{T: -1, K: 2, E: 4, A: 1},
		{},
	}
	for _, g := range bad {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%v: panic: %v", g, r)
				}
			}()
			_, _ = g.Rows(), g.PlanLen()
			if _, err := g.View(make([]int32, 10)); err == nil {
				t.Errorf("%v: View accepted an invalid geometry", g)
			}
			if err := (Plan{Geometry: g}).Check(); err == nil {
				t.Errorf("%v: Check accepted an invalid geometry", g)
			}
		}()
	}
}

// TestReliabilitySizesBeyondInt32: a geometry whose permuted rows or slots exceed int32 row
// ids is rejected before anything is allocated.
func TestReliabilitySizesBeyondInt32(t *testing.T) {
	for _, g := range []Geometry{
		{T: 1 << 28, K: 8, E: 256, A: 1},                           // T·K = 2^31
		{T: 1 << 28, K: 7, E: 256, A: 1 << 21},                     // T·K fits, the padding does not
		{T: 4, K: 2, E: 1 << 12, A: 1, Mode: Capacity, C: 1 << 20}, // E·C = 2^32
		{T: 4, K: 2, E: 3, A: 1 << 30, Mode: Capacity, C: 1},       // roundup(C, A) = 2^30, ·E
	} {
		err := g.Validate()
		if err == nil || !strings.Contains(err.Error(), "exceed the int32 row id limit") {
			t.Errorf("%v: Validate gave %v, want the int32 row id limit", g, err)
		}
		if err := BuildPlan[float32](make([]int32, 1), g, nil, nil); err == nil || !strings.Contains(err.Error(), "int32 row id limit") {
			t.Errorf("%v: BuildPlan gave %v", g, err)
		}
	}
	// The largest dropless geometry that fits is accepted (where the machine can hold it).
	defer hostmem.SetLimit(hostmem.SetLimit(1 << 40))
	if err := (Geometry{T: math.MaxInt32, K: 1, E: 1, A: 1}).Validate(); err != nil {
		t.Errorf("T·K = MaxInt32 rejected: %v", err)
	}
}

// TestReliabilityNaNPolicy pins the NaN/Inf policy of docs/errors.md: ops that make a discrete
// choice from a value reject NaN (BuildPlan under drop by prob); arithmetic propagates NaN and
// Inf like IEEE arithmetic does, for the slots that are routed and only for those.
func TestReliabilityNaNPolicy(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	byProb := Geometry{T: 4, K: 1, E: 2, A: 1, Mode: Capacity, C: 1, Drop: DropByProb}
	ids := []int32{0, 0, 1, 1}
	t.Run("BuildPlan rejects NaN under drop by prob (float32 too)", func(t *testing.T) {
		dst := make([]int32, byProb.PlanLen())
		err := BuildPlan(dst, byProb, ids, []float32{0.5, float32(nan), 0.5, 0.5})
		if err == nil || !strings.Contains(err.Error(), "probs[1,0] is NaN") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("BuildPlan orders Inf like any value", func(t *testing.T) {
		dst := make([]int32, byProb.PlanLen())
		if err := BuildPlan(dst, byProb, ids, []float64{1, inf, -inf, 0}); err != nil {
			t.Fatal(err)
		}
		p, _ := byProb.View(dst)
		// expert 0 keeps token 1 (+Inf beats 1); expert 1 keeps token 3 (0 beats -Inf).
		if want := []int32{-1, 0, -1, 1}; !equalInt32(p.RowOf, want) {
			t.Fatalf("rowOf = %v, want %v", p.RowOf, want)
		}
	})
	t.Run("NaN probs are ignored by position and dropless plans", func(t *testing.T) {
		for _, g := range []Geometry{{T: 4, K: 1, E: 2, A: 1}, {T: 4, K: 1, E: 2, A: 1, Mode: Capacity, C: 1}} {
			dst := make([]int32, g.PlanLen())
			if err := BuildPlan(dst, g, ids, []float64{nan, nan, nan, nan}); err != nil {
				t.Errorf("%v: %v", g, err)
			}
		}
	})
	t.Run("unpermute propagates NaN and Inf of routed slots only", func(t *testing.T) {
		g := Geometry{T: 3, K: 2, E: 3, A: 1}
		flat := make([]int32, g.PlanLen())
		if err := BuildPlan[float64](flat, g, []int32{0, 1, 1, -1, 2, 0}, nil); err != nil {
			t.Fatal(err)
		}
		p, _ := g.View(flat)
		const H = 2
		yp := make([]float64, g.Rows()*H)
		for i := range yp {
			yp[i] = 1
		}
		// token 0: NaN prob on a routed slot; token 1: NaN prob on its empty slot (-1);
		// token 2: prob 0 on a row holding +Inf (0·Inf = NaN, as IEEE says).
		probs := []float64{nan, 0.5, 0.5, nan, 0.5, 0}
		yp[int(p.RowOf[5])*H] = inf
		y := make([]float64, g.T*H)
		if err := UnpermuteForward(y, yp, probs, p, H); err != nil {
			t.Fatal(err)
		}
		if !math.IsNaN(y[0]) || !math.IsNaN(y[1]) {
			t.Errorf("token 0: %v, want NaN", y[:2])
		}
		if y[2] != 0.5 || y[3] != 0.5 {
			t.Errorf("token 1: %v, want [0.5 0.5] (the NaN prob of an empty slot is never read)", y[2:4])
		}
		if !math.IsNaN(y[4]) || y[5] != 0.5 {
			t.Errorf("token 2: %v, want [NaN 0.5]", y[4:6])
		}
		dy := []float64{1, 1, 1, 1, 1, 1}
		dprobs := make([]float64, g.T*g.K)
		dyp := make([]float64, g.Rows()*H)
		if err := UnpermuteBackward(dyp, dprobs, dy, yp, probs, p, H); err != nil {
			t.Fatal(err)
		}
		if dprobs[3] != 0 {
			t.Errorf("dprobs of the empty slot = %v, want 0", dprobs[3])
		}
		if !math.IsNaN(dyp[int(p.RowOf[0])*H]) {
			t.Errorf("dyp of a NaN-weighted row = %v, want NaN", dyp[int(p.RowOf[0])*H])
		}
		if !math.IsInf(dprobs[5], 1) {
			t.Errorf("dprobs of the Inf row = %v, want +Inf", dprobs[5])
		}
	})
}
