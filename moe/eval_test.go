package moe

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestInferMatchesReference: Infer is the dense reference of the layer's config without
// jitter and losses, with the evaluation capacity (EvalCapacityFactor, MinCapacity).
func TestInferMatchesReference(t *testing.T) {
	const T = 12
	base := Config{Hidden: 5, FFN: 6, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 3,
		JitterEps: 0.3, AuxLossCoeff: 0.1, ZLossCoeff: 0.01, SeqAuxLossCoeff: 0.1, SeqLen: 4}
	cases := []struct {
		name  string
		mod   func(*Config)
		evalC int // the capacity Infer must use (0: dropless)
	}{
		{"dropless", func(c *Config) {}, 0},
		{"train capacity kept", func(c *Config) { c.CapacityFactor = 0.5 }, 3},
		{"eval factor", func(c *Config) { c.CapacityFactor = 2; c.EvalCapacityFactor = 0.5 }, 3},
		{"eval factor on a dropless layer", func(c *Config) { c.EvalCapacityFactor = 0.25 }, 2},
		{"min capacity", func(c *Config) { c.EvalCapacityFactor = 0.25; c.MinCapacity = 4 }, 4},
		{"by position", func(c *Config) { c.EvalCapacityFactor = 0.5; c.DropPolicy = DropByPosition }, 3},
		{"sigmoid groups bias shared", func(c *Config) {
			c.Score, c.ExpertBias, c.Groups, c.GroupsKept, c.SharedFFN = Sigmoid, true, 2, 1, 3
			c.EvalCapacityFactor = 0.5
		}, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.mod(&cfg)
			if got := cfg.WithDefaults().EvalCapacity(T); got != tc.evalC {
				t.Fatalf("EvalCapacity(%d) = %d, want %d", T, got, tc.evalC)
			}
			rng := rand.New(rand.NewSource(7))
			x := randVec(rng, T*cfg.Hidden)
			g := G.NewGraph()
			l, err := New(g, "moe", cfg)
			if err != nil {
				t.Fatal(err)
			}
			if l.Bias != nil {
				copy(l.Bias.Value().Data().([]float64), []float64{0.2, -0.1, 0, 0.05})
			}
			xn := G.NewMatrix(g, tensor.Float64, G.WithShape(T, cfg.Hidden), G.WithName("x"),
				G.WithValue(denseOf(tensor.Float64, x, T, cfg.Hidden)))
			out, err := l.Infer(xn)
			if err != nil {
				t.Fatal(err)
			}
			if out.AuxLoss != nil || out.SeqAuxLoss != nil || out.ZLoss != nil {
				t.Errorf("Infer built losses: aux %v seq %v z %v", out.AuxLoss, out.SeqAuxLoss, out.ZLoss)
			}
			if out.Plan.Geometry.C != tc.evalC {
				t.Errorf("plan capacity %d, want %d", out.Plan.Geometry.C, tc.evalC)
			}
			vals := runTape(t, g, out.Y, out.Loss)
			y, loss := vals[0], vals[1]
			if v := f64s(loss); len(v) != 1 || v[0] != 0 {
				t.Errorf("Loss = %v, want the scalar 0", loss)
			}
			ref := l.Config()
			ref.JitterEps, ref.AuxLossCoeff, ref.SeqAuxLossCoeff, ref.ZLossCoeff = 0, 0, 0, 0
			ref.CapacityFactor = ref.evalFactor()
			want := refForwardBackward(t, ref, T, paramsOf(l, x), make([]float64, T*cfg.Hidden))
			if d := reftest.MaxDiff(f64s(y), want.y); !(d <= 1e-12*math.Max(1, maxAbs(want.y))) {
				t.Errorf("Y differs from the reference by %g\n got  %.6g\n want %.6g", d, head(f64s(y)), head(want.y))
			}
			counts := out.CountsValue().Data().([]int32)
			if len(counts) != cfg.Experts {
				t.Fatalf("counts %v, want %d experts", counts, cfg.Experts)
			}
			for e := range counts {
				n := 0
				for tk := range want.kept {
					if want.kept[tk][e] {
						n++
					}
				}
				if int(counts[e]) != n {
					t.Errorf("counts %v: reference expert %d keeps %d tokens", counts, e, n)
				}
			}
		})
	}
}

// TestInferHasNoJitter: Forward with jitter changes Y from run to run; Infer gives the
// jitter-free Y of Forward on a layer without jitter, on every run.
func TestInferHasNoJitter(t *testing.T) {
	const T = 8
	cfg := Config{Hidden: 4, FFN: 4, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 5, JitterEps: 0.5}
	x := randVec(rand.New(rand.NewSource(8)), T*cfg.Hidden)
	run := func(cfg Config, infer bool) []float64 {
		g := G.NewGraph()
		l, err := New(g, "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		xn := G.NewMatrix(g, tensor.Float64, G.WithShape(T, cfg.Hidden), G.WithName("x"),
			G.WithValue(denseOf(tensor.Float64, x, T, cfg.Hidden)))
		out := forwardOrInfer(t, l, xn, infer)
		return append([]float64(nil), f64s(runTape(t, g, out.Y)[0])...)
	}
	noJitter := cfg
	noJitter.JitterEps = 0
	want := run(noJitter, false)
	if d := reftest.MaxDiff(run(cfg, false), want); d == 0 {
		t.Fatalf("Forward with JitterEps=0.5 gave the jitter-free output: the test cannot see jitter")
	}
	if d := reftest.MaxDiff(run(cfg, true), want); d != 0 {
		t.Errorf("Infer differs from the jitter-free Forward by %g", d)
	}
}

// TestLossIsNeverNil: without loss coefficients Loss is a zero scalar of the losses' dtype
// that G.Add takes, in training and evaluation, and the cost's gradient is the task's.
func TestLossIsNeverNil(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, infer := range []bool{false, true} {
			g := G.NewGraph()
			l, err := New(g, "moe", Config{Hidden: 4, FFN: 4, Experts: 4, TopK: 2, Dtype: dt, Seed: 1})
			if err != nil {
				t.Fatal(err)
			}
			xn := G.NewMatrix(g, dt, G.WithShape(6, 4), G.WithName("x"), G.WithInit(G.GlorotN(1)))
			out := forwardOrInfer(t, l, xn, infer)
			if out.Loss == nil || !out.Loss.IsScalar() || out.Loss.Dtype() != dt {
				t.Fatalf("%v infer=%v: Loss = %v, want a %v scalar", dt, infer, out.Loss, dt)
			}
			task := G.Must(G.Sum(out.Y))
			cost, err := G.Add(task, out.Loss)
			if err != nil {
				t.Fatalf("%v infer=%v: G.Add(task, Loss): %v", dt, infer, err)
			}
			var tv, cv G.Value
			G.Read(task, &tv)
			G.Read(cost, &cv)
			if !infer {
				if _, err := G.Grad(cost, l.Learnables()...); err != nil {
					t.Fatalf("%v: Grad: %v", dt, err)
				}
			}
			m := G.NewTapeMachine(g)
			if err := m.RunAll(); err != nil {
				t.Fatalf("%v infer=%v: %v", dt, infer, err)
			}
			m.Close()
			if a, b := f64s(tv)[0], f64s(cv)[0]; a != b || a == 0 {
				t.Errorf("%v infer=%v: task %v, task+Loss %v", dt, infer, a, b)
			}
		}
	}
}

// TestThreeDInput: x [B,S,H] gives Y [B,S,H] equal to the [B·S,H] run, and the same
// gradients for x and the weights.
func TestThreeDInput(t *testing.T) {
	const B, S = 2, 5
	cfg := Config{Hidden: 4, FFN: 6, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 9,
		AuxLossCoeff: 0.1, SeqAuxLossCoeff: 0.2, SeqLen: S, SharedFFN: 2}
	x := randVec(rand.New(rand.NewSource(10)), B*S*cfg.Hidden)
	rnd := randVec(rand.New(rand.NewSource(11)), B*S*cfg.Hidden)
	run := func(shape ...int) (ys []float64, ysh tensor.Shape, grads [][]float64) {
		g := G.NewGraph()
		l, err := New(g, "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		xn := G.NewTensor(g, tensor.Float64, len(shape), G.WithShape(shape...), G.WithName("x"),
			G.WithValue(denseOf(tensor.Float64, x, shape...)))
		out, err := l.Forward(xn)
		if err != nil {
			t.Fatal(err)
		}
		r := G.NewConstant(denseOf(tensor.Float64, rnd, shape...))
		cost := G.Must(G.Add(G.Must(G.Sum(G.Must(G.HadamardProd(out.Y, r)))), out.Loss))
		gs, err := G.Grad(cost, append(G.Nodes{xn}, l.Learnables()...)...)
		if err != nil {
			t.Fatal(err)
		}
		vals := runTape(t, g, append(gs, out.Y)...)
		y := vals[len(gs)]
		for _, v := range vals[:len(gs)] {
			grads = append(grads, append([]float64(nil), f64s(v)...))
		}
		return append([]float64(nil), f64s(y)...), y.Shape().Clone(), grads
	}
	y2, _, g2 := run(B*S, cfg.Hidden)
	y3, sh3, g3 := run(B, S, cfg.Hidden)
	if !sh3.Eq(tensor.Shape{B, S, cfg.Hidden}) {
		t.Errorf("Y has shape %v, want (%d, %d, %d)", sh3, B, S, cfg.Hidden)
	}
	if d := reftest.MaxDiff(y3, y2); d != 0 {
		t.Errorf("Y of [B,S,H] differs from [B·S,H] by %g", d)
	}
	for i := range g2 {
		if d := reftest.MaxDiff(g3[i], g2[i]); d != 0 || len(g3[i]) != len(g2[i]) {
			t.Errorf("gradient %d of [B,S,H] differs from [B·S,H] by %g", i, d)
		}
	}
}

// TestLispMachineForwardOnly: Forward and Infer run on Gorgonia's lisp machine in
// forward-only mode (the int32 Counts node once failed it with "Unhandled dtype: int32")
// and give the tape machine's Y.
func TestLispMachineForwardOnly(t *testing.T) {
	cfgs := []Config{
		{Hidden: 4, FFN: 6, Experts: 4, TopK: 2, Seed: 1},
		{Hidden: 4, FFN: 6, Experts: 4, TopK: 2, Seed: 2, AuxLossCoeff: 0.1, ZLossCoeff: 0.1,
			SharedFFN: 4, CapacityFactor: 0.75},
		{Hidden: 4, FFN: 6, Experts: 4, TopK: 2, Seed: 3, Score: Sigmoid, ExpertBias: true, Groups: 2,
			GroupsKept: 1, ScalingFactor: 2.5},
	}
	x := randVec(rand.New(rand.NewSource(12)), 2*3*4)
	for i, cfg := range cfgs {
		for _, infer := range []bool{false, true} {
			run := func(lisp bool) []float64 {
				g := G.NewGraph()
				l, err := New(g, "moe", cfg)
				if err != nil {
					t.Fatal(err)
				}
				xn := G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 3, 4), G.WithName("x"), G.WithValue(denseOf(tensor.Float32, x, 2, 3, 4)))
				out := forwardOrInfer(t, l, xn, infer)
				var y G.Value
				G.Read(out.Y, &y)
				var m G.VM = G.NewTapeMachine(g)
				if lisp {
					m = G.NewLispMachine(g, G.ExecuteFwdOnly())
				}
				defer m.Close()
				if err := m.RunAll(); err != nil {
					t.Fatalf("config %d infer=%v lisp=%v: %v", i, infer, lisp, err)
				}
				return append([]float64(nil), f64s(y)...)
			}
			if d := reftest.MaxDiff(run(true), run(false)); d != 0 {
				t.Errorf("config %d infer=%v: the lisp machine's Y differs from the tape machine's by %g", i, infer, d)
			}
		}
	}
}

func TestCapacityTable(t *testing.T) {
	cases := []struct {
		cfg         Config
		T           int
		train, eval int
	}{
		{Config{Experts: 8, TopK: 2}, 16, 0, 0},
		{Config{Experts: 8, TopK: 2, CapacityFactor: 1}, 16, 4, 4},
		{Config{Experts: 8, TopK: 2, CapacityFactor: 1, EvalCapacityFactor: 2}, 16, 4, 8},
		{Config{Experts: 8, TopK: 2, EvalCapacityFactor: 1.5}, 10, 0, 4},             // ceil(10·2/8·1.5) = ceil(3.75)
		{Config{Experts: 8, TopK: 2, CapacityFactor: 0.1, MinCapacity: 3}, 16, 3, 3}, // ceil(0.4) = 1 < 3
		{Config{Experts: 8, TopK: 2, CapacityFactor: 4, MinCapacity: 3}, 16, 16, 16},
		{Config{Experts: 8, TopK: 2, MinCapacity: 3}, 16, 0, 0},                            // dropless stays dropless
		{Config{Experts: 8, TopK: 2, CapacityFactor: 1, EvalCapacityFactor: 4}, 16, 4, 16}, // E/K never drops: C = T
		{Config{Experts: 8, TopK: 2, CapacityFactor: 1.1}, 40, 11, 11},                     // 10·1.1 = 11 exactly, not 12
		// 26214400·1.1 = 28835840 exactly; the absolute slack of 1e-9 alone gave 28835841.
		{Config{Experts: 8, TopK: 8, CapacityFactor: 1.1}, 26214400, 28835840, 28835840},
		{Config{Experts: 3, TopK: 1, CapacityFactor: 1}, 300000001, 100000001, 100000001}, // ceil(100000000 + 1/3)
	}
	for i, c := range cases {
		if got := c.cfg.Capacity(c.T); got != c.train {
			t.Errorf("%d: Capacity(%d) = %d, want %d", i, c.T, got, c.train)
		}
		if got := c.cfg.EvalCapacity(c.T); got != c.eval {
			t.Errorf("%d: EvalCapacity(%d) = %d, want %d", i, c.T, got, c.eval)
		}
	}
}

func TestInferRejectsBadInput(t *testing.T) {
	g := G.NewGraph()
	l, err := New(g, "moe", Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2, SeqAuxLossCoeff: 0.1, SeqLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		x      *G.Node
		substr string
	}{
		{"nil", nil, "input is nil"},
		{"wrong width", G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 2, 5), G.WithName("x5")), "want (T, H=4) or (B, S, H=4)"},
		{"empty batch", G.NewTensor(g, tensor.Float32, 3, G.WithShape(0, 2, 4), G.WithName("x0")), "B·S must be"},
	} {
		if _, err := l.Infer(c.x); err == nil || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.substr)
		}
	}
	// Infer has no sequence loss, so a T that is not whole sequences is fine.
	if _, err := l.Infer(G.NewMatrix(g, tensor.Float32, G.WithShape(6, 4), G.WithName("x6"))); err != nil {
		t.Errorf("Infer of 6 tokens with SeqLen=4: %v", err)
	}
	if _, err := l.Infer(G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 6, 4), G.WithName("x26"))); err != nil {
		t.Errorf("Infer of [2,6,4] with SeqLen=4: %v", err)
	}
}

// forwardOrInfer is l.Infer(x) with infer, else l.Forward(x); it fails t on an error.
func forwardOrInfer(t testing.TB, l *Layer, x *G.Node, infer bool) *Output {
	t.Helper()
	apply := l.Forward
	if infer {
		apply = l.Infer
	}
	out, err := apply(x)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runTape reads nodes, runs g once on a tape machine and returns the nodes' values; it fails t
// on an error.
func runTape(t testing.TB, g *G.ExprGraph, nodes ...*G.Node) []G.Value {
	t.Helper()
	vals := make([]G.Value, len(nodes))
	for i, n := range nodes {
		G.Read(n, &vals[i])
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return vals
}
