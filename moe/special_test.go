package moe

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

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
		w1, w3, w2 := f64s(l.W1.Value()), f64s(l.W3.Value()), f64s(l.W2.Value())
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
			if d := maxDiff(c.got, c.want); d > 1e-12 {
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

// TestCapacityHandTable routes 4 tokens to 4 experts (K=2) with an identity router, so the
// logits are the input rows, and checks which pairs each drop policy keeps against tables
// computed by hand.
//
//	token  logits                   top-2   softmax prob of the chosen experts
//	t0     [0.9  0.8  0.1  0.0 ]    e0 e1   e0 .3622  e1 .3278
//	t1     [0.7  0.1  0.9  0.0 ]    e2 e0   e2 .3739  e0 .3061
//	t2     [0.95 0.0  0.0  0.85]    e0 e3   e0 .3734  e3 .3378
//	t3     [0.1  0.2  0.3  0.99]    e3 e2   e3 .4226  e2 .2120
//
// Expert e0 is chosen by t0, t1, t2; e1 by t0; e2 by t1, t3; e3 by t2, t3.
func TestCapacityHandTable(t *testing.T) {
	x := []float64{
		0.9, 0.8, 0.1, 0.0,
		0.7, 0.1, 0.9, 0.0,
		0.95, 0.0, 0.0, 0.85,
		0.1, 0.2, 0.3, 0.99,
	}
	type pair struct{ t, e int }
	cases := []struct {
		name   string
		cf     float64
		policy DropPolicy
		kept   []pair
		counts []int
	}{
		// C = ceil(8/4·0.5) = 1
		{"C=1 position", 0.5, DropByPosition, []pair{{0, 0}, {0, 1}, {1, 2}, {2, 3}}, []int{1, 1, 1, 1}},
		{"C=1 prob", 0.5, DropByProb, []pair{{2, 0}, {0, 1}, {1, 2}, {3, 3}}, []int{1, 1, 1, 1}},
		// C = 2: only e0 (3 tokens) drops one
		{"C=2 position", 1, DropByPosition, []pair{{0, 0}, {1, 0}, {0, 1}, {1, 2}, {3, 2}, {2, 3}, {3, 3}}, []int{2, 1, 2, 2}},
		{"C=2 prob", 1, DropByProb, []pair{{0, 0}, {2, 0}, {0, 1}, {1, 2}, {3, 2}, {2, 3}, {3, 3}}, []int{2, 1, 2, 2}},
	}
	for _, c := range cases {
		cfg := Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2, PreSoftmax: true, Dtype: tensor.Float64,
			CapacityFactor: c.cf, DropPolicy: c.policy}
		g := G.NewGraph()
		l, err := New(g, "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		eye := l.Router.Value().Data().([]float64)
		for i := range eye {
			eye[i] = 0
		}
		for i := 0; i < 4; i++ {
			eye[i*4+i] = 1
		}
		xn := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 4), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, x, 4, 4)))
		out, err := l.Forward(xn)
		if err != nil {
			t.Fatal(err)
		}
		var planV, countsV G.Value
		G.Read(out.Plan.Node, &planV)
		G.Read(out.Counts, &countsV)
		m := G.NewTapeMachine(g)
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Close()
		geo := out.Plan.Geometry
		if geo.C != map[float64]int{0.5: 1, 1: 2}[c.cf] {
			t.Fatalf("%s: capacity %d", c.name, geo.C)
		}
		p, err := geo.View(planV.Data().([]int32))
		if err != nil {
			t.Fatal(err)
		}
		// The ids tell which expert each slot names; rowOf tells whether it was kept.
		ids := make([]int, 0, 8)
		for tk := 0; tk < 4; tk++ {
			row := x[tk*4 : tk*4+4]
			a, b := argTop2(row)
			ids = append(ids, a, b)
		}
		var kept []pair
		for i, r := range p.RowOf {
			if r >= 0 {
				kept = append(kept, pair{i / 2, ids[i]})
			}
		}
		if len(kept) != len(c.kept) {
			t.Errorf("%s: kept %v, want %v", c.name, kept, c.kept)
			continue
		}
		for _, w := range c.kept {
			found := false
			for _, k := range kept {
				found = found || k == w
			}
			if !found {
				t.Errorf("%s: kept %v, want %v", c.name, kept, c.kept)
				break
			}
		}
		st, err := out.Stats(countsV)
		if err != nil {
			t.Fatal(err)
		}
		for e, n := range c.counts {
			if st.TokensPerExpert[e] != n {
				t.Errorf("%s: tokens per expert %v, want %v", c.name, st.TokensPerExpert, c.counts)
				break
			}
		}
		if want := 8 - len(c.kept); st.Dropped != want {
			t.Errorf("%s: dropped %d, want %d", c.name, st.Dropped, want)
		}
	}
}

func argTop2(row []float64) (int, int) {
	a := 0
	for i := range row {
		if row[i] > row[a] {
			a = i
		}
	}
	b := -1
	for i := range row {
		if i != a && (b < 0 || row[i] > row[b]) {
			b = i
		}
	}
	return a, b
}

// TestLossesInIsolation differentiates only the weighted losses (no output term) and checks
// their values and the router and input gradients against the closed forms
//
//	aux:  L = c·E/(K·T²)·Σ_e N_e·Σ_t s[t,e],   ∂L/∂z[t,i] = s[t,i]·(a_i − Σ_e a_e·s[t,e]),  a_e = c·E·N_e/(K·T²)
//	z:    L = c_z/T·Σ_t lse_t²,                ∂L/∂z[t,i] = 2·c_z/T·lse_t·softmax(z_t)_i
//
// with ∂L/∂W = xᵀ·∂z and ∂L/∂x = ∂z·Wᵀ.
func TestLossesInIsolation(t *testing.T) {
	const T, H, E, K = 6, 3, 4, 2
	rng := rand.New(rand.NewSource(9))
	x := randVec(rng, T*H)
	for _, c := range []struct {
		name        string
		aux, seq, z float64
		seqLen      int
	}{
		{"aux", 0.7, 0, 0, 0},
		{"seq aux", 0, 0.7, 0, 3},
		{"z", 0, 0, 0.3, 0},
		{"all", 0.2, 0.5, 0.3, 2},
	} {
		cfg := Config{Hidden: H, FFN: 2, Experts: E, TopK: K, Dtype: tensor.Float64, AuxLossCoeff: c.aux, SeqAuxLossCoeff: c.seq, SeqLen: c.seqLen, ZLossCoeff: c.z, Seed: 10}
		g := G.NewGraph()
		l, err := New(g, "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		xn := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, x, T, H)))
		out, err := l.Forward(xn)
		if err != nil {
			t.Fatal(err)
		}
		grads, err := G.Grad(out.Loss, xn, l.Router)
		if err != nil {
			t.Fatal(err)
		}
		var lossV, dxV, dwV G.Value
		G.Read(out.Loss, &lossV)
		G.Read(grads[0], &dxV)
		G.Read(grads[1], &dwV)
		m := G.NewTapeMachine(g)
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Close()
		W := f64s(l.Router.Value())
		z := make([]float64, T*E)
		for tk := 0; tk < T; tk++ {
			for e := 0; e < E; e++ {
				for h := 0; h < H; h++ {
					z[tk*E+e] += x[tk*H+h] * W[h*E+e]
				}
			}
		}
		// top-2 per token (softmax is monotone in the logits)
		chosen := make([][]bool, T)
		for tk := range chosen {
			chosen[tk] = make([]bool, E)
			a, b := argTop2(z[tk*E : tk*E+E])
			chosen[tk][a], chosen[tk][b] = true, true
		}
		var want float64
		dz := make([]float64, T*E)
		addBalance := func(coeff float64, seqLen int) {
			B := T / seqLen
			for b := 0; b < B; b++ {
				N := make([]float64, E)
				for tk := b * seqLen; tk < (b+1)*seqLen; tk++ {
					for e := 0; e < E; e++ {
						N[e] += b2f(chosen[tk][e])
					}
				}
				for tk := b * seqLen; tk < (b+1)*seqLen; tk++ {
					s := refSoftmax(z[tk*E : tk*E+E])
					a := make([]float64, E)
					var as float64
					for e := 0; e < E; e++ {
						a[e] = coeff * float64(E) * N[e] / (float64(B) * K * float64(seqLen*seqLen))
						want += a[e] * s[e]
						as += a[e] * s[e]
					}
					for i := 0; i < E; i++ {
						dz[tk*E+i] += s[i] * (a[i] - as)
					}
				}
			}
		}
		if c.aux > 0 {
			addBalance(c.aux, T)
		}
		if c.seq > 0 {
			addBalance(c.seq, c.seqLen)
		}
		if c.z > 0 {
			for tk := 0; tk < T; tk++ {
				row := z[tk*E : tk*E+E]
				var s float64
				for _, v := range row {
					s += math.Exp(v)
				}
				lse := math.Log(s)
				want += c.z / T * lse * lse
				for i, v := range row {
					dz[tk*E+i] += 2 * c.z / T * lse * math.Exp(v) / s
				}
			}
		}
		dW := make([]float64, H*E)
		dx := make([]float64, T*H)
		for tk := 0; tk < T; tk++ {
			for h := 0; h < H; h++ {
				for e := 0; e < E; e++ {
					dW[h*E+e] += x[tk*H+h] * dz[tk*E+e]
					dx[tk*H+h] += dz[tk*E+e] * W[h*E+e]
				}
			}
		}
		if d := math.Abs(f64s(lossV)[0] - want); d > 1e-12 {
			t.Errorf("%s: loss %g, want %g", c.name, f64s(lossV)[0], want)
		}
		if d := maxDiff(f64s(dwV), dW); d > 1e-12 {
			t.Errorf("%s: router gradient max diff %g\n got  %v\n want %v", c.name, d, f64s(dwV), dW)
		}
		if d := maxDiff(f64s(dxV), dx); d > 1e-12 {
			t.Errorf("%s: input gradient max diff %g", c.name, d)
		}
	}
}

// TestSeqAuxWithOneSequenceEqualsAux: with SeqLen = T the sequence-wise loss is the
// micro-batch loss.
func TestSeqAuxWithOneSequenceEqualsAux(t *testing.T) {
	const T = 6
	cfg := Config{Hidden: 3, FFN: 2, Experts: 4, TopK: 2, Dtype: tensor.Float64, AuxLossCoeff: 0.3, SeqAuxLossCoeff: 0.3, SeqLen: T, Seed: 1}
	rng := rand.New(rand.NewSource(3))
	_, got := runLayer(t, cfg, T, randVec(rng, T*3), randVec(rng, T*3), nil)
	if got.auxLoss == 0 || math.Abs(got.auxLoss-got.seqAuxLoss) > 1e-15 {
		t.Fatalf("aux %g, seq aux %g", got.auxLoss, got.seqAuxLoss)
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
			if d := maxDiff(q.grad, num); d > 1e-6 {
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
	set(l.W1, p.w1)
	set(l.W3, p.w3)
	set(l.W2, p.w2)
	set(l.SharedW1, p.s1)
	set(l.SharedW3, p.s3)
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
	if d := maxDiff(f64s(l.Bias.Value()), want); d > 1e-7 {
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
	if d := maxDiff(f64s(l.Bias.Value()), want); d > 1e-7 {
		t.Fatalf("bias changed by a rejected update: %v", f64s(l.Bias.Value()))
	}
	h := G.NewGraph()
	nb, err := New(h, "moe", Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := nb.UpdateExpertBias(load); err == nil || !strings.Contains(err.Error(), "no expert bias") {
		t.Errorf("layer without bias: %v", err)
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

func TestJitter(t *testing.T) {
	const T, H = 6, 3
	cfg := Config{Hidden: H, FFN: 2, Experts: 3, TopK: 2, Dtype: tensor.Float64, Seed: 4}
	rng := rand.New(rand.NewSource(7))
	x, rnd := randVec(rng, T*H), randVec(rng, T*H)
	_, plain := runLayer(t, cfg, T, x, rnd, nil)
	cfg.JitterEps = 1e-3
	_, j1 := runLayer(t, cfg, T, x, rnd, nil)
	_, j2 := runLayer(t, cfg, T, x, rnd, nil)
	if d := maxDiff(j1.y, j2.y); d != 0 {
		t.Errorf("same seed, same graph: outputs differ by %g", d)
	}
	d := maxDiff(j1.y, plain.y)
	if d == 0 || d > 0.05 {
		t.Errorf("jitter 1e-3 changed the output by %g, want a small non-zero change", d)
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Hidden: 4, FFN: 4, Experts: 8, TopK: 2}
	cases := []struct {
		name   string
		mod    func(*Config)
		substr string
	}{
		{"K > E", func(c *Config) { c.TopK = 9 }, "TopK=9 > Experts=8"},
		{"K = 0", func(c *Config) { c.TopK = 0 }, "TopK=0"},
		{"H = 0", func(c *Config) { c.Hidden = 0 }, "Hidden=0"},
		{"F = 0", func(c *Config) { c.FFN = 0 }, "FFN=0"},
		{"E not divisible by groups", func(c *Config) { c.Groups, c.GroupsKept = 3, 1 }, "not divisible by Groups=3"},
		{"groups kept > groups", func(c *Config) { c.Groups, c.GroupsKept = 2, 3 }, "GroupsKept=3"},
		{"K does not fit kept groups", func(c *Config) { c.TopK = 3; c.Groups, c.GroupsKept = 4, 1 }, "does not fit"},
		{"expert bias without sigmoid", func(c *Config) { c.ExpertBias = true }, "ExpertBias needs the Sigmoid"},
		{"pre-softmax with sigmoid", func(c *Config) { c.Score = Sigmoid; c.PreSoftmax = true }, "PreSoftmax needs"},
		{"softmax top-1 post", func(c *Config) { c.TopK = 1 }, "needs PreSoftmax"},
		{"int dtype", func(c *Config) { c.Dtype = tensor.Int }, "Dtype=int"},
		{"router dtype", func(c *Config) { c.RouterDtype = tensor.Int32 }, "RouterDtype=int32"},
		{"negative capacity", func(c *Config) { c.CapacityFactor = -1 }, "CapacityFactor=-1"},
		{"pad without capacity", func(c *Config) { c.PadToCapacity = true }, "PadToCapacity needs capacity"},
		{"jitter 1", func(c *Config) { c.JitterEps = 1 }, "JitterEps=1"},
		{"seq aux without seq len", func(c *Config) { c.SeqAuxLossCoeff = 0.1 }, "needs SeqLen"},
		{"NaN aux", func(c *Config) { c.AuxLossCoeff = math.NaN() }, "AuxLossCoeff=NaN"},
		{"negative z", func(c *Config) { c.ZLossCoeff = -1 }, "ZLossCoeff=-1"},
		{"scaling", func(c *Config) { c.ScalingFactor = -2 }, "ScalingFactor=-2"},
		{"align", func(c *Config) { c.Align = -1 }, "Align=-1"},
		{"activation", func(c *Config) { c.Activation = 7 }, "unknown activation"},
		{"score", func(c *Config) { c.Score = 5 }, "unknown score"},
		{"drop policy", func(c *Config) { c.DropPolicy = 9 }, "unknown drop policy"},
		{"shared", func(c *Config) { c.SharedFFN = -1 }, "SharedFFN=-1"},
		{"eval capacity", func(c *Config) { c.EvalCapacityFactor = -0.5 }, "EvalCapacityFactor=-0.5"},
		{"eval capacity NaN", func(c *Config) { c.EvalCapacityFactor = math.NaN() }, "EvalCapacityFactor=NaN"},
		{"min capacity", func(c *Config) { c.MinCapacity = -1 }, "MinCapacity=-1"},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, c := range cases {
		cfg := ok
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.substr)
			continue
		}
		g := G.NewGraph()
		if _, err := New(g, "moe", cfg); err == nil {
			t.Errorf("%s: New accepted the config", c.name)
		}
		if len(g.AllNodes()) != 0 {
			t.Errorf("%s: New added %d nodes despite the error", c.name, len(g.AllNodes()))
		}
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	g := G.NewGraph()
	l, err := New(g, "moe", Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2, SeqAuxLossCoeff: 0.1, SeqLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(g, "moe", Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2}); err == nil {
		t.Error("second layer with the same name: no error")
	}
	other := G.NewGraph()
	cases := []struct {
		name   string
		x      *G.Node
		substr string
	}{
		{"nil", nil, "nil"},
		{"wrong width", G.NewMatrix(g, tensor.Float32, G.WithShape(8, 5), G.WithName("x5")), "want (T, H=4)"},
		{"wrong dtype", G.NewMatrix(g, tensor.Float64, G.WithShape(8, 4), G.WithName("x64")), "dtype float64"},
		{"other graph", G.NewMatrix(other, tensor.Float32, G.WithShape(8, 4), G.WithName("xo")), "not in the layer's graph"},
		{"3-D wrong width", G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 4, 5), G.WithName("x3")), "want (T, H=4) or (B, S, H=4)"},
		{"4-D", G.NewTensor(g, tensor.Float32, 4, G.WithShape(2, 2, 2, 4), G.WithName("x4")), "want (T, H=4) or (B, S, H=4)"},
		{"3-D not whole sequences", G.NewTensor(g, tensor.Float32, 3, G.WithShape(1, 6, 4), G.WithName("x16")), "SeqLen=4"},
		{"T not whole sequences", G.NewMatrix(g, tensor.Float32, G.WithShape(6, 4), G.WithName("x6")), "SeqLen=4"},
	}
	for _, c := range cases {
		_, err := l.Forward(c.x)
		if err == nil || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.substr)
		}
	}
	var _ = kernels.Dropless
}
