package kernels

import (
	"math"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestTopKHandTable: hand-checked ids for plain, biased and grouped selection, ties to the
// lower id.
func TestTopKHandTable(t *testing.T) {
	scores := []float64{
		0.1, 0.4, 0.4, 0.2, // ties: 1 before 2
		3, -1, 2, 5,
	}
	for _, c := range []struct {
		name         string
		bias         []float64
		K, grp, kept int
		want         []int32
	}{
		{"plain", nil, 2, 1, 1, []int32{1, 2, 3, 0}},
		{"bias", []float64{0, 0, 0, 1}, 2, 1, 1, []int32{3, 1, 3, 0}},
		// groups {0,1} and {2,3}, group score = the sum of the top K/kept = 2: token 0 keeps
		// group 1 (0.6 > 0.5), token 1 keeps group 1 (7 > 2).
		{"groups", nil, 2, 2, 1, []int32{2, 3, 3, 2}},
		// two groups kept of two, group score = top-1 (K/kept = 1): all experts allowed.
		{"groups kept", nil, 2, 2, 2, []int32{1, 2, 3, 0}},
	} {
		ids := make([]int32, 2*c.K)
		if err := TopK(ids, scores, c.bias, 4, c.K, c.grp, c.kept); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !slices.Equal(ids, c.want) {
			t.Errorf("%s: ids %v, want %v", c.name, ids, c.want)
		}
	}
	// Tied group scores go to the lower group: groups {0,1} and {2,3} both score 1 (top-1),
	// so group 0 is kept and expert 0 is chosen (group 1 would give expert 3).
	ids := make([]int32, 1)
	if err := TopK(ids, []float64{1, 0, 0, 1}, nil, 4, 1, 2, 1); err != nil {
		t.Fatal(err)
	}
	if ids[0] != 0 {
		t.Errorf("tied groups: id %d, want 0 (the lower group)", ids[0])
	}
}

// TestTopKMatchesSort: without groups, TopK equals a stable sort of each row by descending
// score, on random rows over several parallel blocks.
func TestTopKMatchesSort(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	const T, E, K = 700, 16, 4
	scores := make([]float64, T*E)
	for i := range scores {
		scores[i] = float64(rng.Intn(8)) // many ties
	}
	ids := make([]int32, T*K)
	if err := TopK(ids, scores, nil, E, K, 1, 1); err != nil {
		t.Fatal(err)
	}
	for r := 0; r < T; r++ {
		order := make([]int32, E)
		for e := range order {
			order[e] = int32(e)
		}
		row := scores[r*E : (r+1)*E]
		slices.SortStableFunc(order, func(a, b int32) int {
			switch {
			case row[a] > row[b]:
				return -1
			case row[a] < row[b]:
				return 1
			}
			return 0
		})
		if !slices.Equal(ids[r*K:(r+1)*K], order[:K]) {
			t.Fatalf("token %d: ids %v, want %v", r, ids[r*K:(r+1)*K], order[:K])
		}
	}
}

// TestTopKRejectsBadInput: bad sizes, groups and NaN scores are errors, not panics.
func TestTopKRejectsBadInput(t *testing.T) {
	ok := []float64{1, 2, 3, 4}
	for _, c := range []struct {
		name            string
		ids             []int32
		scores, bias    []float64
		E, K, grp, kept int
		want            string
	}{
		{"E", make([]int32, 1), ok, nil, 0, 1, 1, 1, "E=0"},
		{"K", make([]int32, 1), ok, nil, 4, 5, 1, 1, "K=5"},
		{"groups", make([]int32, 1), ok, nil, 4, 1, 3, 1, "equal groups"},
		{"kept", make([]int32, 1), ok, nil, 4, 1, 2, 3, "GroupsKept=3"},
		{"fit", make([]int32, 3), ok, nil, 4, 3, 2, 1, "do not fit"},
		{"sizes", make([]int32, 2), ok, nil, 4, 1, 1, 1, "scores"},
		{"bias", make([]int32, 1), ok, []float64{1}, 4, 1, 1, 1, "bias has 1"},
		{"nan", make([]int32, 1), []float64{1, math.NaN(), 3, 4}, nil, 4, 1, 1, 1, "scores[0,1] is NaN"},
		{"inf", make([]int32, 1), []float64{math.Inf(1), 2, 3, 4}, []float64{math.Inf(-1), 0, 0, 0}, 4, 1, 1, 1, "+ bias[0] is NaN"},
		{"group nan", make([]int32, 2), []float64{math.Inf(1), math.Inf(-1), 3, 4}, nil, 4, 2, 2, 1, "group 0 of token 0"},
		// The ids of the tokens before (and beside) a NaN group score used to be written.
		{"group nan, second token", make([]int32, 4), []float64{1, 2, 3, 4, math.Inf(1), math.Inf(-1), 3, 4}, nil, 4, 2, 2, 1, "group 0 of token 1"},
		{"group nan from bias", make([]int32, 4), []float64{1, 2, math.Inf(1), 4, 1, 2, 3, 4}, []float64{0, 0, 0, math.Inf(-1)}, 4, 2, 2, 1, "group 1 of token 0"},
	} {
		for i := range c.ids {
			c.ids[i] = -7
		}
		err := TopK(c.ids, c.scores, c.bias, c.E, c.K, c.grp, c.kept)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one containing %q", c.name, err, c.want)
		}
		for i, id := range c.ids {
			if id != -7 {
				t.Errorf("%s: ids[%d] written (%d) although the call failed", c.name, i, id)
			}
		}
	}
}

// TestTopKNoTokensAllocatesNothing: with no tokens TopK and RouterTopK do no work (nothing of E's size), whatever E
// is (each call of the row worker used to make buffers of E values even for T = 0: at E = 2^36
// the process died out of memory).
func TestTopKNoTokensAllocatesNothing(t *testing.T) {
	const E = 1 << 20
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"TopK", func() error { return TopK(nil, nil, nil, E, 2, 1, 1) }},
		{"TopK K=1", func() error { return TopK(nil, nil, nil, E, 1, 1, 1) }},
		{"TopK groups", func() error { return TopK(nil, nil, nil, E, 2, 4, 2) }},
		{"RouterTopK", func() error {
			return RouterTopK[float32](nil, nil, nil, E, 2, Router{Score: RouterSoftmax, Groups: 1, Kept: 1})
		}},
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := c.f()
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; err != nil || n >= E {
			t.Errorf("%s with T = 0, E = %d: err %v, %d bytes allocated; want no error and less than E bytes", c.name, E, err, n)
		}
	}
}
