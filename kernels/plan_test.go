package kernels

import (
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"
)

type planCase struct {
	name string
	g    Geometry
	ids  func(rng *rand.Rand) []int32
}

func planCases() []planCase {
	rnd := func(T, K, E int, drop float64) func(*rand.Rand) []int32 {
		return func(rng *rand.Rand) []int32 { return randomIDs(rng, T, K, E, drop) }
	}
	allOn := func(T, K int, e int32) func(*rand.Rand) []int32 {
		return func(*rand.Rand) []int32 {
			ids := make([]int32, T*K)
			for t := 0; t < T; t++ {
				for k := 0; k < K; k++ {
					ids[t*K+k] = -1
				}
				ids[t*K] = e
			}
			return ids
		}
	}
	return []planCase{
		{"T=1", Geometry{T: 1, K: 2, E: 4, A: 1}, rnd(1, 2, 4, 0)},
		{"E=1", Geometry{T: 7, K: 1, E: 1, A: 1}, rnd(7, 1, 1, 0)},
		{"K=E", Geometry{T: 9, K: 4, E: 4, A: 1}, rnd(9, 4, 4, 0)},
		{"idle experts", Geometry{T: 3, K: 1, E: 16, A: 1}, rnd(3, 1, 16, 0)},
		{"all on one expert", Geometry{T: 50, K: 3, E: 5, A: 1}, allOn(50, 3, 2)},
		{"A=8", Geometry{T: 37, K: 2, E: 6, A: 8}, rnd(37, 2, 6, 0)},
		{"A=3 with -1 ids", Geometry{T: 41, K: 3, E: 7, A: 3}, rnd(41, 3, 7, 0.3)},
		{"all -1", Geometry{T: 5, K: 2, E: 3, A: 2}, rnd(5, 2, 3, 1)},
		{"large parallel", Geometry{T: 20000, K: 4, E: 64, A: 4}, rnd(20000, 4, 64, 0.05)},
		{"capacity position", Geometry{T: 60, K: 2, E: 4, A: 1, Mode: Capacity, C: 20}, rnd(60, 2, 4, 0)},
		{"capacity position A=4 pad", Geometry{T: 60, K: 2, E: 4, A: 4, Mode: Capacity, C: 13, PadToCapacity: true}, rnd(60, 2, 4, 0.1)},
		{"capacity prob", Geometry{T: 60, K: 2, E: 4, A: 1, Mode: Capacity, C: 20, Drop: DropByProb}, rnd(60, 2, 4, 0)},
		{"capacity prob A=4 pad", Geometry{T: 60, K: 3, E: 5, A: 4, Mode: Capacity, C: 9, Drop: DropByProb, PadToCapacity: true}, rnd(60, 3, 5, 0.1)},
		{"capacity prob all on one", Geometry{T: 30, K: 2, E: 3, A: 2, Mode: Capacity, C: 7, Drop: DropByProb}, allOn(30, 2, 1)},
		{"capacity large parallel", Geometry{T: 20000, K: 2, E: 8, A: 8, Mode: Capacity, C: 4000}, rnd(20000, 2, 8, 0)},
		{"capacity C=1", Geometry{T: 10, K: 1, E: 2, A: 1, Mode: Capacity, C: 1, Drop: DropByProb}, rnd(10, 1, 2, 0)},
	}
}

func TestBuildPlanMatchesReference(t *testing.T) {
	for _, c := range planCases() {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(len(c.name))))
			ids := c.ids(rng)
			probs := make([]float64, len(ids))
			for i := range probs {
				probs[i] = float64(rng.IntN(5)) / 4 // many ties: exercises the tie rule
			}
			flat := make([]int32, c.g.PlanLen())
			if err := BuildPlan(flat, c.g, ids, probs); err != nil {
				t.Fatal(err)
			}
			p, err := c.g.View(flat)
			if err != nil {
				t.Fatal(err)
			}
			counts, offsets, rowOf, tokenOf := refPlan(c.g, ids, probs)
			for _, cmp := range []struct {
				name      string
				got, want []int32
			}{{"counts", p.Counts, counts}, {"offsets", p.Offsets, offsets}, {"rowOf", p.RowOf, rowOf}, {"tokenOf", p.TokenOf, tokenOf}} {
				if !equalInt32(cmp.got, cmp.want) {
					t.Errorf("%s differs from reference:\n got  %v\n want %v", cmp.name, head(cmp.got), head(cmp.want))
				}
			}
			if err := p.Check(); err != nil {
				t.Errorf("built plan fails Check: %v", err)
			}
			// float32 probs give the same plan.
			flat32 := make([]int32, c.g.PlanLen())
			if err := BuildPlan(flat32, c.g, ids, to32(probs)); err != nil {
				t.Fatal(err)
			}
			if !equalInt32(flat, flat32) {
				t.Errorf("float32 probs give another plan")
			}
		})
	}
}

func head(v []int32) []int32 {
	if len(v) > 40 {
		return v[:40]
	}
	return v
}

// TestCapacityHandTable checks capacity drops against a small table worked out by hand.
func TestCapacityHandTable(t *testing.T) {
	// 5 tokens, K=1, E=2, C=2. Expert 0 gets tokens 0,1,3,4 with probs .1 .9 .5 .9; expert 1 gets token 2.
	ids := []int32{0, 0, 1, 0, 0}
	probs := []float64{0.1, 0.9, 0.3, 0.5, 0.9}
	for _, c := range []struct {
		name        string
		g           Geometry
		rowOf       []int32
		tokenOf     []int32
		counts, off []int32
	}{
		{"position", Geometry{T: 5, K: 1, E: 2, A: 1, Mode: Capacity, C: 2},
			[]int32{0, 1, 2, -1, -1}, []int32{0, 1, 2, -1}, []int32{2, 1}, []int32{0, 2, 3}},
		{"position pad", Geometry{T: 5, K: 1, E: 2, A: 1, Mode: Capacity, C: 2, PadToCapacity: true},
			[]int32{0, 1, 2, -1, -1}, []int32{0, 1, 2, -1}, []int32{2, 1}, []int32{0, 2, 4}},
		{"prob", Geometry{T: 5, K: 1, E: 2, A: 1, Mode: Capacity, C: 2, Drop: DropByProb},
			[]int32{-1, 0, 2, -1, 1}, []int32{1, 4, 2, -1}, []int32{2, 1}, []int32{0, 2, 3}},
		{"prob C=3 A=2 pad", Geometry{T: 5, K: 1, E: 2, A: 2, Mode: Capacity, C: 3, Drop: DropByProb, PadToCapacity: true},
			[]int32{-1, 0, 4, 1, 2}, []int32{1, 3, 4, -1, 2, -1, -1, -1}, []int32{3, 1}, []int32{0, 4, 8}},
	} {
		flat := make([]int32, c.g.PlanLen())
		if err := BuildPlan(flat, c.g, ids, probs); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		p, _ := c.g.View(flat)
		if !equalInt32(p.RowOf, c.rowOf) || !equalInt32(p.TokenOf, c.tokenOf) || !equalInt32(p.Counts, c.counts) || !equalInt32(p.Offsets, c.off) {
			t.Errorf("%s: got rowOf %v tokenOf %v counts %v offsets %v\nwant rowOf %v tokenOf %v counts %v offsets %v",
				c.name, p.RowOf, p.TokenOf, p.Counts, p.Offsets, c.rowOf, c.tokenOf, c.counts, c.off)
		}
	}
}

func TestBuildPlanDeterministicAcrossGOMAXPROCS(t *testing.T) {
	g := Geometry{T: 30000, K: 4, E: 32, A: 4, Mode: Capacity, C: 3000, Drop: DropByProb}
	rng := rand.New(rand.NewPCG(7, 7))
	ids := randomIDs(rng, g.T, g.K, g.E, 0.01)
	probs := randFloats(rng, len(ids))
	var ref []int32
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	for _, procs := range []int{1, 2, 3, 8, 1} {
		runtime.GOMAXPROCS(procs)
		for _, mode := range []Geometry{g, {T: g.T, K: g.K, E: g.E, A: 4}} {
			flat := make([]int32, mode.PlanLen())
			if err := BuildPlan(flat, mode, ids, probs); err != nil {
				t.Fatal(err)
			}
			if mode.Mode == Capacity {
				if ref == nil {
					ref = flat
				} else if !equalInt32(ref, flat) {
					t.Fatalf("GOMAXPROCS=%d: plan differs", procs)
				}
			}
		}
	}
}

func TestBuildPlanBadInput(t *testing.T) {
	good := Geometry{T: 3, K: 2, E: 4, A: 1}
	goodIDs := []int32{0, 1, 2, 3, 1, -1}
	cases := []struct {
		name  string
		g     Geometry
		ids   []int32
		probs []float64
		dst   int // length of dst; 0 means g.PlanLen() when valid
		want  string
	}{
		{"id >= E", good, []int32{0, 1, 2, 4, 1, -1}, nil, 0, "out of range"},
		{"id < -1", good, []int32{0, 1, -2, 3, 1, -1}, nil, 0, "out of range"},
		{"repeated expert", good, []int32{0, 1, 2, 2, 1, -1}, nil, 0, "twice"},
		{"K > E", Geometry{T: 3, K: 5, E: 4, A: 1}, make([]int32, 15), nil, 1, "K=5 > E=4"},
		{"T = 0", Geometry{T: 0, K: 2, E: 4, A: 1}, nil, nil, 1, "T=0"},
		{"E = 0", Geometry{T: 3, K: 2, E: 0, A: 1}, goodIDs, nil, 1, "E=0"},
		{"K = 0", Geometry{T: 3, K: 0, E: 4, A: 1}, nil, nil, 1, "K=0"},
		{"A = 0", Geometry{T: 3, K: 2, E: 4, A: 0}, goodIDs, nil, 1, "alignment"},
		{"capacity 0", Geometry{T: 3, K: 2, E: 4, A: 1, Mode: Capacity}, goodIDs, nil, 1, "capacity C=0"},
		{"capacity in dropless", Geometry{T: 3, K: 2, E: 4, A: 1, C: 2}, goodIDs, nil, 0, "dropless"},
		{"bad mode", Geometry{T: 3, K: 2, E: 4, A: 1, Mode: 7}, goodIDs, nil, 1, "unknown mode"},
		{"bad drop policy", Geometry{T: 3, K: 2, E: 4, A: 1, Mode: Capacity, C: 1, Drop: 9}, goodIDs, nil, 0, "drop policy"},
		{"ids too short", good, goodIDs[:5], nil, 0, "ids has 5"},
		{"dst wrong length", good, goodIDs, nil, 3, "output has 3"},
		{"drop by prob without probs", Geometry{T: 3, K: 2, E: 4, A: 1, Mode: Capacity, C: 1, Drop: DropByProb}, goodIDs, nil, 0, "needs probs"},
		{"NaN prob", Geometry{T: 3, K: 2, E: 4, A: 1, Mode: Capacity, C: 1, Drop: DropByProb}, goodIDs, []float64{0, 1, math.NaN(), 0, 0, 0}, 0, "NaN"},
		{"too many rows", Geometry{T: 1 << 30, K: 4, E: 8, A: 1}, nil, nil, 1, "int32 row id limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n := c.dst
			if n == 0 {
				n = c.g.PlanLen()
			}
			dst := make([]int32, n)
			for i := range dst {
				dst[i] = 12345
			}
			err := BuildPlan(dst, c.g, c.ids, c.probs)
			if err == nil {
				t.Fatalf("want an error containing %q, got nil", c.want)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q does not name the problem (%q)", err, c.want)
			}
			for i, v := range dst {
				if v != 12345 {
					t.Fatalf("dst[%d] was written (%d) although the call failed", i, v)
				}
			}
		})
	}
}

func TestPlanCheckRejectsCorruptPlans(t *testing.T) {
	g := Geometry{T: 4, K: 2, E: 3, A: 2}
	ids := []int32{0, 1, 1, 2, 2, 0, 0, -1}
	fresh := func() Plan {
		flat := make([]int32, g.PlanLen())
		if err := BuildPlan(flat, g, ids, []float64(nil)); err != nil {
			t.Fatal(err)
		}
		p, _ := g.View(flat)
		return p
	}
	R := int32(g.Rows())
	cases := []struct {
		name   string
		mutate func(p Plan)
		want   string
	}{
		{"rowOf past R", func(p Plan) { p.RowOf[0] = R }, "out of range"},
		{"rowOf < -1", func(p Plan) { p.RowOf[1] = -5 }, "out of range"},
		{"tokenOf past T", func(p Plan) { p.TokenOf[0] = 4 }, "out of range"},
		{"rowOf and tokenOf disagree", func(p Plan) { p.TokenOf[p.RowOf[0]] = 3 }, "tokenOf"},
		{"two slots one row", func(p Plan) { p.RowOf[1] = p.RowOf[0] }, "same row"},
		{"unaligned offset", func(p Plan) { p.Offsets[1]++ }, "aligned"},
		{"offsets past R", func(p Plan) { p.Offsets[g.E] = R + 1 }, "exceeds R"},
		{"negative count", func(p Plan) { p.Counts[0] = -1 }, "segment"},
	}
	if err := fresh().Check(); err != nil {
		t.Fatalf("good plan fails Check: %v", err)
	}
	for _, c := range cases {
		p := fresh()
		c.mutate(p)
		err := p.Check()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	if _, err := g.View(make([]int32, 3)); err == nil {
		t.Error("View accepted a vector of the wrong length")
	}
}

// TestCheckIDsInvalidGeometry: CheckIDs gives Validate's error for a geometry BuildPlan would
// refuse. It used to trust the geometry: a T·K that wraps int panicked (slice bounds), T =
// MaxInt with K = 0 looped over MaxInt empty rows, and T = K = -1 accepted ids [5].
func TestCheckIDsInvalidGeometry(t *testing.T) {
	for _, c := range []struct {
		name string
		g    Geometry
		ids  []int32
	}{
		{"T*K wraps", Geometry{T: 1 << 62, K: 4, E: 8, A: 1}, nil},
		{"K=0, T=MaxInt", Geometry{T: math.MaxInt, K: 0, E: 1, A: 1}, nil},
		{"negative T and K", Geometry{T: -1, K: -1, E: 2, A: 1}, []int32{5}},
	} {
		done := make(chan error, 1)
		go func() {
			defer func() {
				if r := recover(); r != nil {
					done <- fmt.Errorf("panic: %v", r)
				}
			}()
			done <- c.g.CheckIDs(c.ids)
		}()
		select {
		case err := <-done:
			want := c.g.Validate()
			if want == nil || err == nil || err.Error() != want.Error() {
				t.Errorf("%s: CheckIDs: %v, want Validate's error %v", c.name, err, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: CheckIDs still running after 10 s", c.name)
		}
	}
}
