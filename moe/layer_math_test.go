package moe

import (
	"math"
	"math/rand"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The layer against its math: one expert is a dense FFN, an idle expert gets no gradient, and
// the whole layer passes a float64 central-difference check.

// TestOneExpertIsDenseFFN: with E=1, K=1 every token goes to the one expert with prob 1, so
// the layer is a dense SwiGLU FFN. The expected output and weight gradients are computed with
// plain loops here.
func TestOneExpertIsDenseFFN(t *testing.T) {
	const T, H, F = 5, 3, 4
	for _, mode := range []struct {
		name string
		cf   float64
	}{{"dropless", 0}, {"capacity 1", 1}} {
		cfg := Config{Hidden: H, FFN: F, Experts: 1, TopK: 1, PreSoftmax: true, Dtype: tensor.Float64, CapacityFactor: mode.cf}
		rng := rand.New(rand.NewSource(4))
		x, rnd := randVec(rng, T*H), randVec(rng, T*H)
		l, got := runLayer(t, cfg, T, x, rnd, nil)
		w1, w3 := unpackGateUp(cfg, f64s(l.W1.Value()), F)
		w2 := f64s(l.W2.Value())
		y := make([]float64, T*H)
		dw1, dw3, dw2 := make([]float64, H*F), make([]float64, H*F), make([]float64, F*H)
		dx := make([]float64, T*H)
		for tk := 0; tk < T; tk++ {
			z1, z3, hid, dh := make([]float64, F), make([]float64, F), make([]float64, F), make([]float64, F)
			for f := 0; f < F; f++ {
				for h := 0; h < H; h++ {
					z1[f] += x[tk*H+h] * w1[h*F+f]
					z3[f] += x[tk*H+h] * w3[h*F+f]
				}
				s := 1 / (1 + math.Exp(-z1[f]))
				hid[f] = z1[f] * s * z3[f]
			}
			for h := 0; h < H; h++ {
				for f := 0; f < F; f++ {
					y[tk*H+h] += hid[f] * w2[f*H+h]
					dw2[f*H+h] += hid[f] * rnd[tk*H+h] // cost = Σ y⊙rnd
					dh[f] += rnd[tk*H+h] * w2[f*H+h]
				}
			}
			for f := 0; f < F; f++ {
				s := 1 / (1 + math.Exp(-z1[f]))
				dz1 := dh[f] * z3[f] * (s + z1[f]*s*(1-s))
				dz3 := dh[f] * z1[f] * s
				for h := 0; h < H; h++ {
					dw1[h*F+f] += x[tk*H+h] * dz1
					dw3[h*F+f] += x[tk*H+h] * dz3
					dx[tk*H+h] += dz1*w1[h*F+f] + dz3*w3[h*F+f]
				}
			}
		}
		for _, c := range []struct {
			what      string
			got, want []float64
		}{{"y", got.y, y}, {"dx", got.dx, dx}, {"dw1", got.dw1, dw1}, {"dw3", got.dw3, dw3}, {"dw2", got.dw2, dw2}} {
			if d := reftest.MaxDiff(c.got, c.want); d > 1e-12 {
				t.Errorf("%s: %s: max diff %g", mode.name, c.what, d)
			}
		}
		// The router's probs are all 1 whatever its weight: zero gradient (up to the rounding
		// of the softmax backward).
		if maxAbs(got.drouter) > 1e-15 {
			t.Errorf("%s: router gradient %v, want 0", mode.name, got.drouter)
		}
	}
}

// TestIdleExpertGetsZeroGradient: an expert no token chooses still gets a gradient, and it is
// exactly zero.
func TestIdleExpertGetsZeroGradient(t *testing.T) {
	const T, H, F, E = 8, 4, 3, 4
	cfg := Config{Hidden: H, FFN: F, Experts: E, TopK: 2, Score: Sigmoid, ExpertBias: true, Dtype: tensor.Float64, Seed: 5}
	rng := rand.New(rand.NewSource(6))
	x, rnd := randVec(rng, T*H), randVec(rng, T*H)
	// bias -10 on expert 3: its selection score is below every other expert's.
	_, got := runLayer(t, cfg, T, x, rnd, setBias(0, 0, 0, -10))
	if got.counts[3] != 0 {
		t.Fatalf("counts %v: expert 3 is not idle", got.counts)
	}
	for _, c := range []struct {
		what string
		g    []float64
		per  int
	}{{"dw1", got.dw1, H * F}, {"dw3", got.dw3, H * F}, {"dw2", got.dw2, F * H}} {
		if len(c.g) != E*c.per {
			t.Fatalf("%s has %d elements, want %d", c.what, len(c.g), E*c.per)
		}
		for i, v := range c.g[3*c.per:] {
			if v != 0 {
				t.Fatalf("%s of idle expert 3: element %d = %g, want 0", c.what, i, v)
			}
		}
		if maxAbs(c.g[:3*c.per]) == 0 {
			t.Fatalf("%s of busy experts is all zero", c.what)
		}
	}
}

// TestLayerCentralDifference checks the whole layer's gradients (input and every weight)
// against float64 central differences of the cost, for two configurations.
func TestLayerCentralDifference(t *testing.T) {
	const T, H = 6, 3
	cfgs := []struct {
		name  string
		cfg   Config
		setup func(*Layer)
	}{
		{"softmax shared losses", Config{Hidden: H, FFN: 2, Experts: 4, TopK: 2, SharedFFN: 2, AuxLossCoeff: 0.3, SeqAuxLossCoeff: 0.2, SeqLen: 3, ZLossCoeff: 0.1, Dtype: tensor.Float64, Seed: 21}, nil},
		{"sigmoid groups bias capacity gelu probs-on-act", Config{Hidden: H, FFN: 2, Experts: 4, TopK: 2, Score: Sigmoid, Groups: 2, GroupsKept: 1, ExpertBias: true, ScalingFactor: 1.5,
			CapacityFactor: 0.8, Activation: GELU, ProbsOnActivation: true, SharedFFN: 2, AuxLossCoeff: 0.2, Dtype: tensor.Float64, Seed: 22}, setBias(0.1, 0, -0.05, 0.02)},
	}
	rng := rand.New(rand.NewSource(12))
	x, rnd := randVec(rng, T*H), randVec(rng, T*H)
	for _, c := range cfgs {
		l, got := runLayer(t, c.cfg, T, x, rnd, c.setup)
		params := []*[]float64{}
		p := paramsOf(l, x)
		ps := []struct {
			name string
			v    []float64
			grad []float64
		}{{"x", p.x, got.dx}, {"router", p.router, got.drouter}, {"w1", p.w1, got.dw1}, {"w3", p.w3, got.dw3}, {"w2", p.w2, got.dw2}, {"s1", p.s1, got.ds1}, {"s3", p.s3, got.ds3}, {"s2", p.s2, got.ds2}}
		_ = params
		eval := func() float64 { return evalCost(t, c.cfg, T, p, rnd, c.setup) }
		const eps = 1e-6
		for _, q := range ps {
			if q.v == nil {
				continue
			}
			num := make([]float64, len(q.v))
			for i := range q.v {
				v := q.v[i]
				q.v[i] = v + eps
				fp := eval()
				q.v[i] = v - eps
				fm := eval()
				q.v[i] = v
				num[i] = (fp - fm) / (2 * eps)
			}
			if d := reftest.MaxDiff(q.grad, num); d > 1e-6 {
				t.Errorf("%s: d/d%s: max diff %g vs central difference\n got %v\n num %v", c.name, q.name, d, head(q.grad), head(num))
			}
		}
	}
}

// evalCost builds the layer with the weights in p, runs the forward only, and returns
// Σ y⊙rnd + Loss.
func evalCost(t *testing.T, cfg Config, T int, p refParams, rnd []float64, setup func(*Layer)) float64 {
	t.Helper()
	g := G.NewGraph()
	l, err := New(g, "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(l)
	}
	set := func(n *G.Node, v []float64) {
		if n != nil {
			copy(n.Value().Data().([]float64), v)
		}
	}
	set(l.Router, p.router)
	set(l.W1, packGateUp(cfg, p.w1, p.w3, cfg.FFN))
	set(l.W2, p.w2)
	set(l.SharedW1, packGateUp(cfg, p.s1, p.s3, cfg.SharedFFN))
	set(l.SharedW2, p.s2)
	xn := G.NewMatrix(g, tensor.Float64, G.WithShape(T, cfg.Hidden), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, p.x, T, cfg.Hidden)))
	out, err := l.Forward(xn)
	if err != nil {
		t.Fatal(err)
	}
	prod, err := G.HadamardProd(out.Y, G.NewConstant(denseOf(tensor.Float64, rnd, T, cfg.Hidden), G.WithName("rnd")))
	if err != nil {
		t.Fatal(err)
	}
	cost, err := G.Sum(prod)
	if err != nil {
		t.Fatal(err)
	}
	if out.Loss != nil {
		if cost, err = G.Add(cost, out.Loss); err != nil {
			t.Fatal(err)
		}
	}
	var v G.Value
	G.Read(cost, &v)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	return f64s(v)[0]
}

// TestGroupScoreOfPostSoftmaxIsOnLogits pins what Config.Groups documents: a Softmax router
// without PreSoftmax scores its groups by sums of logits, so it may keep another group than
// the sums of its softmax probabilities (PreSoftmax) keep. The token's logits are (3, -10 | 1,
// 1): logit sums -7 and 2 keep group 1, probability sums e³ and 2e (over the same denominator)
// keep group 0.
func TestGroupScoreOfPostSoftmaxIsOnLogits(t *testing.T) {
	for _, c := range []struct {
		pre  bool
		want []int32
	}{{false, []int32{2, 3}}, {true, []int32{0, 1}}} {
		g := G.NewGraph()
		l, err := New(g, "m", Config{Hidden: 2, FFN: 1, Experts: 4, TopK: 2, Groups: 2, GroupsKept: 1, PreSoftmax: c.pre, Dtype: tensor.Float64})
		if err != nil {
			t.Fatal(err)
		}
		if err := G.Let(l.Router, tensor.New(tensor.WithShape(2, 4), tensor.WithBacking([]float64{3, -10, 1, 1, 0, 0, 0, 0}))); err != nil {
			t.Fatal(err)
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(1, 2), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(1, 2), tensor.WithBacking([]float64{1, 0}))))
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		got := runTape(t, g, out.IDs)[0].Data().([]int32)
		if len(got) != 2 || got[0] != c.want[0] || got[1] != c.want[1] {
			t.Errorf("PreSoftmax=%v: ids %v, want %v", c.pre, got, c.want)
		}
	}
}
