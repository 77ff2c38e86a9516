package moe

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/internal/opkit"
)

// TestHostileSizes: configs and inputs whose sizes overflow int or exceed the memory the process may use
// are rejected before anything is allocated (a failed allocation is a fatal error that no
// recover catches), with an error naming the sizes.
func TestHostileSizes(t *testing.T) {
	defer hostmem.SetLimit(hostmem.SetLimit(64 << 30)) // a 64 GiB machine, whatever runs the test
	cases := []struct {
		name string
		cfg  Config
		T    int // > 0: also build Forward on T tokens (cfg must be valid then)
		want string
	}{
		{"the issue's 2^20 experts of 4096×4096", Config{Hidden: 4096, FFN: 4096, Experts: 1 << 20, TopK: 2}, 0,
			"the weights of Experts=1048576 Hidden=4096 FFN=4096 SharedFFN=0 need 2.111e+14 bytes, more than the"},
		{"2^16 experts of 1024×1024: 768 GiB", Config{Hidden: 1024, FFN: 1024, Experts: 1 << 16, TopK: 2}, 0,
			"need 8.249e+11 bytes, more than the 68719476736 bytes of memory this process may use"},
		{"a shared expert beyond memory", Config{Hidden: 1 << 16, FFN: 1, Experts: 2, TopK: 2, SharedFFN: 1 << 18}, 0, "SharedFFN=262144 need"},
		{"Experts·Hidden·FFN wraps around int", Config{Hidden: 1 << 31, FFN: 1 << 31, Experts: 4, TopK: 2}, 0, "too large to allocate"},
		{"Experts beyond int32 ids", Config{Hidden: 1, FFN: 1, Experts: 1 << 32, TopK: 2}, 0, "Experts=4294967296"},
		{"activations beyond memory", Config{Hidden: 1 << 14, FFN: 1, Experts: 2, TopK: 2, Score: Sigmoid}, 1 << 20,
			"T=1048576 tokens' 2097152 permuted rows (32771 values a row in the forward pass) need 2.749e+11 bytes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.T == 0 {
				// Validate rejects sizes that cannot be represented; New also what this
				// machine cannot hold (a Config may describe a larger model).
				err := c.cfg.Validate()
				if memory := strings.Contains(c.want, "need"); memory != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
					t.Errorf("Validate: %v (want an error only for unrepresentable sizes: %q)", err, c.want)
				}
				g := G.NewGraph()
				if _, err := New(g, "m", c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
					t.Errorf("New: %v, want %q", err, c.want)
				}
				if len(g.AllNodes()) != 0 {
					t.Errorf("New added %d nodes", len(g.AllNodes()))
				}
				return
			}
			g := G.NewGraph()
			l, err := New(g, "m", c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			x := G.NewMatrix(g, tensor.Float32, G.WithShape(c.T, c.cfg.Hidden), G.WithName("x"))
			if _, err := l.Forward(x); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("Forward: %v, want %q", err, c.want)
			}
		})
	}
}

// TestHostileNilReceivers: every exported method of a nil (or zero) Layer and Output returns
// an error or a zero value instead of panicking.
func TestHostileNilReceivers(t *testing.T) {
	var l *Layer
	var o *Output
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 2), G.WithName("x"))
	load := tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{1, 1}))
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"(*Layer)(nil).Forward", func() error { _, err := l.Forward(x); return err }, "Forward on a nil or zero Layer"},
		{"(&Layer{}).Forward", func() error { _, err := (&Layer{}).Forward(x); return err }, "Forward on a nil or zero Layer"},
		{"(*Layer)(nil).UpdateExpertBias", func() error { return l.UpdateExpertBias(load) }, "UpdateExpertBias on a nil Layer"},
		{"(&Layer{}).UpdateExpertBias", func() error { return (&Layer{}).UpdateExpertBias(load) }, "no expert bias"},
		{"(*Output)(nil).Stats", func() error { _, err := o.Stats(load); return err }, "the output has no plan"},
		{"(*Layer)(nil).Config and Learnables", func() error {
			if l.Config() != (Config{}) || l.Learnables() != nil {
				return errors.New("not zero")
			}
			return errors.New("zero values")
		}, "zero values"},
		// A zero Layer{} gave G.Nodes{nil, nil, nil}, which reached G.Grad and the solver.
		{"(&Layer{}).Learnables, State and Replicated", func() error {
			z := &Layer{}
			if z.Learnables() != nil || z.State() != nil || z.Replicated() != nil {
				return fmt.Errorf("%v %v %v", z.Learnables(), z.State(), z.Replicated())
			}
			return errors.New("no nodes")
		}, "no nodes"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			if err := c.call(); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%v, want %q", err, c.want)
			}
		})
	}
}

// TestHostileCounts: Stats and UpdateExpertBias reject counts that no step can produce (huge,
// fractional, negative, of the wrong shape, summing past T·K) and change nothing.
func TestHostileCounts(t *testing.T) {
	g := G.NewGraph()
	l, err := New(g, "m", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, BiasUpdateRate: 0.01})
	if err != nil {
		t.Fatal(err)
	}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 2), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))))
	out, err := l.Forward(x)
	if err != nil {
		t.Fatal(err)
	}
	v := func(shape []int, data any) G.Value {
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
	}
	cases := []struct {
		name      string
		counts    G.Value
		stats     string // Stats' error ("" = accepted)
		bias      string // UpdateExpertBias' error
		wantStats Stats
	}{
		{"good", v([]int{4}, []int32{2, 1, 3, 0}), "", "", Stats{TokensPerExpert: []int{2, 1, 3, 0}, Dropped: 0}},
		{"good with drops", v([]int{4}, []float64{1, 1, 0, 1}), "", "", Stats{TokensPerExpert: []int{1, 1, 0, 1}, Dropped: 3}},
		{"1e308", v([]int{4}, []float64{1e308, 0, 0, 0}), "counts[0..0] sum to 1e+308, more than the 6 pairs", "more than the 9.007199254740992e+15 pairs", Stats{}},
		{"huge sum under the load bound", v([]int{4}, []float64{1 << 40, 0, 0, 0}), "more than the 6 pairs", "", Stats{}},
		{"non-integer", v([]int{4}, []float32{1.5, 0, 0, 0}), "counts[0] = 1.5 is not a valid count", "counts[0] = 1.5 is not a valid count", Stats{}},
		{"negative", v([]int{4}, []int{0, -1, 0, 0}), "counts[1] = -1 is not a valid count", "counts[1] = -1", Stats{}},
		{"NaN", v([]int{4}, []float64{0, 0, math.NaN(), 0}), "counts[2] = NaN", "counts[2] = NaN", Stats{}},
		{"+Inf", v([]int{4}, []float64{0, 0, 0, math.Inf(1)}), "counts[3] = +Inf", "counts[3] = +Inf", Stats{}},
		{"sum past T·K", v([]int{4}, []int32{2, 2, 2, 1}), "counts[0..3] sum to 7, more than the 6 pairs", "", Stats{}},
		{"[2,2] instead of [4]", v([]int{2, 2}, []int32{1, 1, 1, 1}), "counts has shape (2, 2), want (E=4)", "counts has shape (2, 2)", Stats{}},
		{"[3]", v([]int{3}, []int32{1, 1, 1}), "want (E=4)", "want (E=4)", Stats{}},
		{"bool data", v([]int{4}, []bool{true, true, false, false}), "counts has data []bool", "counts has data []bool", Stats{}},
		{"nil", nil, "counts value is nil", "counts value is nil", Stats{}},
		{"nil *tensor.Dense", (*tensor.Dense)(nil), "counts value is nil", "counts value is nil", Stats{}},
		{"empty *tensor.Dense", new(tensor.Dense), "counts value is an empty *tensor.Dense", "counts value is an empty *tensor.Dense", Stats{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var before []float64
			has := opkit.Missing(c.counts) == ""
			if has {
				before = slices.Clone(f64sAny(c.counts))
			}
			bias := slices.Clone(l.Bias.Value().Data().([]float32))
			st, err := out.Stats(c.counts)
			switch {
			case c.stats == "" && err != nil:
				t.Errorf("Stats: %v", err)
			case c.stats == "" && !(slices.Equal(st.TokensPerExpert, c.wantStats.TokensPerExpert) && st.Dropped == c.wantStats.Dropped):
				t.Errorf("Stats = %+v, want %+v", st, c.wantStats)
			case c.stats != "" && (err == nil || !strings.Contains(err.Error(), c.stats)):
				t.Errorf("Stats: %v, want %q", err, c.stats)
			}
			err = l.UpdateExpertBias(c.counts)
			if c.bias == "" {
				if err != nil {
					t.Errorf("UpdateExpertBias: %v", err)
				}
			} else {
				if err == nil || !strings.Contains(err.Error(), c.bias) {
					t.Errorf("UpdateExpertBias: %v, want %q", err, c.bias)
				}
				if !slices.Equal(bias, l.Bias.Value().Data().([]float32)) {
					t.Errorf("the bias changed on a rejected update")
				}
			}
			if has && !slices.EqualFunc(before, f64sAny(c.counts), func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }) {
				t.Errorf("the counts changed")
			}
		})
	}
}

// f64sAny reads numeric data as float64 (bool as 0/1), for before/after comparisons.
func f64sAny(v G.Value) []float64 {
	var o []float64
	switch d := v.Data().(type) {
	case []int32:
		for _, x := range d {
			o = append(o, float64(x))
		}
	case []int:
		for _, x := range d {
			o = append(o, float64(x))
		}
	case []float32:
		for _, x := range d {
			o = append(o, float64(x))
		}
	case []float64:
		o = append(o, d...)
	case []bool:
		for _, x := range d {
			o = append(o, map[bool]float64{true: 1}[x])
		}
	}
	return o
}

// buildMu serialises graph building in TestHostileExpertParallelNaN.
var buildMu sync.Mutex

// TestHostileExpertParallelNaN: a NaN score on one rank of moe.NewExpertParallel, whose ranks
// run their machines in their own goroutines (the NCCL pattern, no RunRank, no Group.Run),
// with an in-process group that never times out: the rank's guarded top-k aborts the
// communicator, so every rank returns an error promptly; the failing rank names the NaN.
func TestHostileExpertParallelNaN(t *testing.T) {
	for _, cfg := range []Config{
		{Hidden: 4, FFN: 3, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 3},
		{Hidden: 4, FFN: 3, Experts: 4, TopK: 2, Score: Sigmoid, ExpertBias: true, CapacityFactor: 1, Dtype: tensor.Float64, Seed: 4},
	} {
		const N, T = 2, 5
		grp, err := ep.NewGroupTimeout(N, 0)
		if err != nil {
			t.Fatal(err)
		}
		errs := make([]error, N)
		done := make(chan struct{}, N)
		xs := make([][]float64, N)
		for r := range N {
			xs[r] = make([]float64, T*cfg.Hidden)
			for i := range xs[r] {
				xs[r][i] = math.Sin(float64(r*100 + i))
			}
		}
		xs[1][2*cfg.Hidden+1] = math.NaN() // token 2 of rank 1
		keep := [][]float64{slices.Clone(xs[0]), slices.Clone(xs[1])}
		for r := range N {
			comm, _ := grp.Comm(r)
			go func() {
				defer func() { done <- struct{}{} }()
				errs[r] = func() error {
					// Gorgonia's graph building shares constant nodes between graphs (a data
					// race under -race): build one rank at a time, run together.
					buildMu.Lock()
					g := G.NewGraph()
					l, err := NewExpertParallel(g, "m", cfg, comm)
					var m G.VM
					if err == nil {
						x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, cfg.Hidden), G.WithName("x"),
							G.WithValue(tensor.New(tensor.WithShape(T, cfg.Hidden), tensor.WithBacking(slices.Clone(xs[r])))))
						var out *Output
						if out, err = l.Forward(x); err == nil {
							var cost *G.Node
							if cost, err = G.Sum(out.Y); err == nil {
								if _, err = G.Grad(cost, append(G.Nodes{x}, l.Learnables()...)...); err == nil {
									m = G.NewTapeMachine(g)
								}
							}
						}
					}
					buildMu.Unlock()
					if err != nil {
						return err
					}
					defer m.Close()
					return m.RunAll()
				}()
			}()
		}
		deadline := time.After(20 * time.Second)
		for range N {
			select {
			case <-done:
			case <-deadline:
				grp.Abort(errors.New("test deadline"))
				t.Fatalf("%+v: the ranks did not return within 20 s: rank 1's NaN did not abort the communicator", cfg)
			}
		}
		if errs[1] == nil || !strings.Contains(errs[1].Error(), "scores[2,") || !strings.Contains(errs[1].Error(), "is NaN") {
			t.Errorf("rank 1: %v, want the NaN score of token 2", errs[1])
		}
		if errs[0] == nil || !strings.Contains(errs[0].Error(), ep.ErrAborted.Error()) { // Gorgonia's run error does not unwrap
			t.Errorf("rank 0: %v, want ErrAborted", errs[0])
		}
		for r := range N {
			if !slices.EqualFunc(keep[r], xs[r], func(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }) {
				t.Errorf("rank %d's input changed", r)
			}
		}
	}
}
