package moe

import (
	"math"
	"math/rand"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/reftest"
	"github.com/gomoe/gomoe/train"
)

func TestUpdateExpertBias(t *testing.T) {
	g := G.NewGraph()
	l, err := New(g, "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, BiasUpdateRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	setBias(0.5, 0, -0.5, 0)(l)
	load := tensor.New(tensor.WithShape(4), tensor.WithBacking([]int32{5, 3, 4, 0})) // mean 3
	if err := l.UpdateExpertBias(load); err != nil {
		t.Fatal(err)
	}
	want := []float64{0.49, 0, -0.51, 0.01}
	if d := reftest.MaxDiff(f64s(l.Bias.Value()), want); d > 1e-7 {
		t.Fatalf("bias %v, want %v", f64s(l.Bias.Value()), want)
	}
	// Bad loads change nothing.
	for _, bad := range []G.Value{
		tensor.New(tensor.WithShape(3), tensor.WithBacking([]int32{1, 2, 3})),
		tensor.New(tensor.WithShape(4), tensor.WithBacking([]float32{1, 2, -3, 4})),
		nil,
	} {
		if err := l.UpdateExpertBias(bad); err == nil {
			t.Errorf("load %v: no error", bad)
		}
	}
	if d := reftest.MaxDiff(f64s(l.Bias.Value()), want); d > 1e-7 {
		t.Fatalf("bias changed by a rejected update: %v", f64s(l.Bias.Value()))
	}
	// Updates that would take an element past the dtype's range change nothing (the bias
	// used to become ±Inf, then NaN), for a float32 and a float64 router.
	for _, c := range []struct {
		dt   tensor.Dtype
		rate float64
		want string
	}{
		{tensor.Float32, math.MaxFloat32 / 2, "bias[0] would become -Inf"},
		{tensor.Float64, math.MaxFloat64 / 2, "bias[0] would become -Inf"},
	} {
		big, err := New(G.NewGraph(), "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, RouterDtype: c.dt, BiasUpdateRate: c.rate})
		if err != nil {
			t.Fatal(err)
		}
		setBias(0, 0, 0, 0)(big)
		for step := 0; step < 2; step++ { // to -rate, then to -2·rate (the dtype's largest finite values)
			if err := big.UpdateExpertBias(load); err != nil {
				t.Fatalf("%v step %d: %v", c.dt, step, err)
			}
		}
		before := f64s(big.Bias.Value())
		if err := big.UpdateExpertBias(load); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: third update: %v, want %q", c.dt, err, c.want)
		}
		if after := f64s(big.Bias.Value()); reftest.MaxDiff(after, before) != 0 {
			t.Errorf("%v: a refused update changed the bias from %v to %v", c.dt, before, after)
		}
	}
	h := G.NewGraph()
	nb, err := New(h, "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := nb.UpdateExpertBias(load); err == nil || !strings.Contains(err.Error(), "no expert bias") {
		t.Errorf("layer without bias: %v", err)
	}
	// A bias value that is a strided view (column 0 of a [4,2] matrix, which G.Let accepts):
	// refused, and no element of the matrix changes (the steps used to land on the backing
	// array from the view's offset, one of them in column 1).
	sv, err := New(G.NewGraph(), "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, BiasUpdateRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	backing := []float32{0, 10, 0, 10, 0, 10, 0, 10}
	m := tensor.New(tensor.WithShape(4, 2), tensor.WithBacking(slices.Clone(backing)))
	col, err := m.Slice(nil, G.S(0))
	if err != nil {
		t.Fatal(err)
	}
	if err := G.Let(sv.Bias, col); err != nil {
		t.Fatal(err)
	}
	skew := tensor.New(tensor.WithShape(4), tensor.WithBacking([]int32{5, 3, 4, 0}))
	if err := sv.UpdateExpertBias(skew); err == nil || !strings.Contains(err.Error(), "non-contiguous view") {
		t.Errorf("strided bias view: error %v", err)
	}
	if got := m.Data().([]float32); !slices.Equal(got, backing) {
		t.Errorf("a refused update on a strided view changed the matrix to %v", got)
	}
}

// TestExpertBiasSteersRouting: raising an expert's bias moves tokens to it, while the probs
// stay the unbiased sigmoid scores (checked by the reference test).
func TestExpertBiasSteersRouting(t *testing.T) {
	const T = 16
	cfg := Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 1, Score: Sigmoid, ExpertBias: true, Dtype: tensor.Float64, Seed: 2}
	rng := rand.New(rand.NewSource(5))
	x, rnd := randVec(rng, T*4), randVec(rng, T*4)
	_, a := runLayer(t, cfg, T, x, rnd, nil)
	_, b := runLayer(t, cfg, T, x, rnd, setBias(0, 0, 0, 0.3))
	if b.counts[3] <= a.counts[3] {
		t.Fatalf("bias +0.3 on expert 3: counts %v -> %v", a.counts, b.counts)
	}
}

// TestLayerState: State is Learnables plus, with ExpertBias, Bias; a checkpoint of State
// restores the bias in a fresh layer (the Learnables alone left it at zero).
func TestLayerState(t *testing.T) {
	plain, err := New(G.NewGraph(), "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2})
	if err != nil {
		t.Fatal(err)
	}
	if s, l := plain.State(), plain.Learnables(); len(s) != len(l) {
		t.Errorf("no ExpertBias: State has %d nodes, Learnables %d", len(s), len(l))
	}
	cfg := Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, SharedFFN: 2}
	l, err := New(G.NewGraph(), "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, ln := l.State(), l.Learnables()
	if len(s) != len(ln)+1 || s[len(s)-1] != l.Bias {
		t.Fatalf("ExpertBias: State %v, want Learnables %v and the bias", s, ln)
	}
	for i := range ln {
		if s[i] != ln[i] {
			t.Fatalf("State[%d] = %v, want %v", i, s[i], ln[i])
		}
	}
	if (*Layer)(nil).State() != nil {
		t.Error("nil layer: State not nil")
	}
	setBias(0.5, 0, -0.5, 0.25)(l)
	path := filepath.Join(t.TempDir(), "ck.safetensors")
	if err := train.SaveCheckpoint(path, train.Checkpoint{Params: l.State()}); err != nil {
		t.Fatal(err)
	}
	fresh, err := New(G.NewGraph(), "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := train.LoadCheckpoint(path, train.Checkpoint{Params: fresh.State()}); err != nil {
		t.Fatal(err)
	}
	got := fresh.Bias.Value().Data().([]float32)
	for i, w := range []float32{0.5, 0, -0.5, 0.25} {
		if got[i] != w {
			t.Fatalf("loaded bias %v, want [0.5 0 -0.5 0.25]", got)
		}
	}
}

// TestCountsFromAView: counts given as a strided view (a column of a matrix, a slice) are
// read at the view's elements; they used to be read as the first E values of the backing
// array, silently the wrong counts.
func TestCountsFromAView(t *testing.T) {
	// Column 1 of this [4,2] matrix is the counts 5, 3, 4, 0 (mean 3); column 0 is junk.
	m := tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]int32{9, 5, 9, 3, 9, 4, 9, 0}))
	col, err := m.Slice(nil, G.S(1))
	if err != nil {
		t.Fatal(err)
	}
	// Elements 2..6 of this vector are 5, 3, 4, 0 (an offset view).
	v := tensor.New(tensor.WithShape(8), tensor.WithBacking([]float32{7, 7, 5, 3, 4, 0, 7, 7}))
	off, err := v.Slice(G.S(2, 6))
	if err != nil {
		t.Fatal(err)
	}
	for name, counts := range map[string]tensor.Tensor{"matrix column": col, "offset slice": off} {
		g := G.NewGraph()
		l, err := New(g, "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, BiasUpdateRate: 0.01})
		if err != nil {
			t.Fatal(err)
		}
		setBias(0, 0, 0, 0)(l)
		if err := l.UpdateExpertBias(counts); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want := []float64{-0.01, 0, -0.01, 0.01}
		if d := reftest.MaxDiff(f64s(l.Bias.Value()), want); d > 1e-7 {
			t.Errorf("%s: bias %v, want %v", name, f64s(l.Bias.Value()), want)
		}
		x := G.NewMatrix(g, G.Float32, G.WithShape(8, 2), G.WithName("x")) // T·K = 16 pairs
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		st, err := out.Stats(counts)
		if err != nil {
			t.Fatalf("%s: Stats: %v", name, err)
		}
		if !slices.Equal(st.TokensPerExpert, []int{5, 3, 4, 0}) || st.Dropped != 4 {
			t.Errorf("%s: Stats = %+v, want tokens [5 3 4 0], dropped 16-12 = 4", name, st)
		}
	}
}
