package op

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// topkRun evaluates TopK on a forward-only tape machine.
func topkRun(t *testing.T, dt tensor.Dtype, scores []float64, T, E, K int, opts TopKOpts, bias []float64) ([]int32, error) {
	t.Helper()
	g := G.NewGraph()
	s := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("scores"), G.WithValue(gcDense(dt, tensor.Shape{T, E}, scores)))
	if bias != nil {
		opts.Bias = G.NewVector(g, dt, G.WithShape(E), G.WithName("bias"), G.WithValue(gcDense(dt, tensor.Shape{E}, bias)))
	}
	ids, err := TopK(s, K, opts)
	if err != nil {
		return nil, err
	}
	var v G.Value
	G.Read(ids, &v)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return nil, err
	}
	return append([]int32(nil), v.Data().([]int32)...), nil
}

func TestTopKHandTable(t *testing.T) {
	cases := []struct {
		name   string
		T, E   int
		K      int
		scores []float64
		opts   TopKOpts
		bias   []float64
		want   []int32
	}{
		{"plain", 2, 4, 2, []float64{0.1, 0.4, 0.3, 0.2, 5, -1, 7, 6}, TopKOpts{}, nil, []int32{1, 2, 2, 3}},
		{"ties go to the lower id", 1, 4, 3, []float64{1, 2, 2, 2}, TopKOpts{}, nil, []int32{1, 2, 3}},
		{"K=E", 1, 3, 3, []float64{3, 1, 2}, TopKOpts{}, nil, []int32{0, 2, 1}},
		{"bias changes the choice", 1, 4, 2, []float64{0.9, 0.8, 0.1, 0.0}, TopKOpts{}, []float64{0, 0, 1, 0}, []int32{2, 0}},
		// 8 experts in 4 groups of 2, keep 2 groups, K=2 -> group score = top-1 of the group.
		// Group maxima: g0 0.9, g1 0.5, g2 0.95, g3 0.1 -> keep g2, g0; top-2 among {0,1,4,5}.
		{"groups: max per group", 1, 8, 2, []float64{0.9, 0.85, 0.5, 0.2, 0.95, 0.0, 0.1, 0.05}, TopKOpts{Groups: 4, GroupsKept: 2}, nil, []int32{4, 0}},
		// K=4, keep 2 groups -> group score = sum of the top-2 of the group:
		// g0 0.9+0.1=1.0, g1 0.6+0.6=1.2, g2 0.7+0.0=0.7, g3 0.3+0.3=0.6 -> keep g1, g0.
		// Note expert 0 (0.9) wins overall, expert 4 (0.7) is excluded with its group.
		{"groups: sum of top-2", 1, 8, 4, []float64{0.9, 0.1, 0.6, 0.6, 0.7, 0.0, 0.3, 0.3}, TopKOpts{Groups: 4, GroupsKept: 2}, nil, []int32{0, 2, 3, 1}},
		// Negative scores in kept groups must still beat masked groups (masked is -inf, not 0).
		{"groups with negative scores", 1, 4, 2, []float64{-5, -6, -1, -0.5}, TopKOpts{Groups: 2, GroupsKept: 1}, nil, []int32{3, 2}},
		// The bias also decides which groups are kept.
		{"groups with bias", 1, 4, 1, []float64{0.5, 0.4, 0.3, 0.2}, TopKOpts{Groups: 2, GroupsKept: 1}, []float64{0, 0, 0.3, 0}, []int32{2}},
	}
	for _, c := range cases {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			got, err := topkRun(t, dt, c.scores, c.T, c.E, c.K, c.opts, c.bias)
			if err != nil {
				t.Fatalf("%s %v: %v", c.name, dt, err)
			}
			for i := range c.want {
				if got[i] != c.want[i] {
					t.Errorf("%s %v: got %v, want %v", c.name, dt, got, c.want)
					break
				}
			}
		}
	}
}

// TestTopKMatchesRepeatedArgmax compares TopK without groups against K rounds of argmax
// (a different algorithm) on random scores with many ties, and checks the group invariant
// (a token uses at most GroupsKept groups) with groups.
func TestTopKMatchesRepeatedArgmax(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	const T, E, K = 600, 12, 4 // T > one parallel block
	scores := make([]float64, T*E)
	for i := range scores {
		scores[i] = float64(rng.Intn(7)) // many ties
	}
	got, err := topkRun(t, tensor.Float64, scores, T, E, K, TopKOpts{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for tok := 0; tok < T; tok++ {
		used := make([]bool, E)
		for k := 0; k < K; k++ {
			best := -1
			for e := 0; e < E; e++ {
				if !used[e] && (best < 0 || scores[tok*E+e] > scores[tok*E+best]) {
					best = e
				}
			}
			used[best] = true
			if got[tok*K+k] != int32(best) {
				t.Fatalf("token %d slot %d: got %d, want %d (row %v)", tok, k, got[tok*K+k], best, scores[tok*E:(tok+1)*E])
			}
		}
	}
	for i := range scores {
		scores[i] = rng.NormFloat64()
	}
	got, err = topkRun(t, tensor.Float32, scores, T, E, K, TopKOpts{Groups: 4, GroupsKept: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for tok := 0; tok < T; tok++ {
		groups := map[int32]bool{}
		for _, e := range got[tok*K : (tok+1)*K] {
			groups[e/3] = true
		}
		if len(groups) > 2 {
			t.Fatalf("token %d uses %d groups: %v", tok, len(groups), got[tok*K:(tok+1)*K])
		}
	}
}

func TestTopKRejectsBadInput(t *testing.T) {
	g := G.NewGraph()
	s := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 6), G.WithName("s"))
	s3 := G.NewTensor(g, tensor.Float64, 3, G.WithShape(3, 6, 1), G.WithName("s3"))
	badBias := G.NewVector(g, tensor.Float64, G.WithShape(5), G.WithName("b5"))
	bias32 := G.NewVector(g, tensor.Float32, G.WithShape(6), G.WithName("b32"))
	cases := []struct {
		name   string
		s      *G.Node
		k      int
		opts   TopKOpts
		substr string
	}{
		{"K > E", s, 7, TopKOpts{}, "K=7"},
		{"K = 0", s, 0, TopKOpts{}, "K=0"},
		{"3-D scores", s3, 2, TopKOpts{}, "want (T, E)"},
		{"groups do not divide E", s, 2, TopKOpts{Groups: 4, GroupsKept: 1}, "equal groups"},
		{"kept > groups", s, 2, TopKOpts{Groups: 2, GroupsKept: 3}, "GroupsKept=3"},
		{"K does not fit kept groups", s, 4, TopKOpts{Groups: 3, GroupsKept: 1}, "do not fit"},
		{"bias shape", s, 2, TopKOpts{Bias: badBias}, "bias has shape"},
		{"bias dtype", s, 2, TopKOpts{Bias: bias32}, "bias is float32"},
		{"nil", nil, 2, TopKOpts{}, "nil"},
	}
	for _, c := range cases {
		_, err := TopK(c.s, c.k, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.substr)
		}
	}
	// NaN scores: a run error, not a panic.
	if _, err := topkRun(t, tensor.Float64, []float64{1, math.NaN(), 0}, 1, 3, 1, TopKOpts{}, nil); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN score: got %v", err)
	}
}
