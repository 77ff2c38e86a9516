package moe

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

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
		if d := reftest.MaxDiff(f64s(dwV), dW); d > 1e-12 {
			t.Errorf("%s: router gradient max diff %g\n got  %v\n want %v", c.name, d, f64s(dwV), dW)
		}
		if d := reftest.MaxDiff(f64s(dxV), dx); d > 1e-12 {
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

// TestBalanceLossesAboveFusedLimit: a layer with more experts than op.RouterBalanceLoss takes
// on the device (kernels.MaxRouterBalanceExperts) builds its balancing losses from the score
// ops, once for both, with the fused loss's values on the same logits and ids, bit for bit.
func TestBalanceLossesAboveFusedLimit(t *testing.T) {
	const T, H = 8, 2
	E := kernels.MaxRouterBalanceExperts + 3
	for _, score := range []ScoreFunc{Softmax, Sigmoid} {
		cfg := Config{Hidden: H, FFN: 2, Experts: E, TopK: 2, Score: score, Dtype: tensor.Float64,
			AuxLossCoeff: 0.3, SeqAuxLossCoeff: 0.2, SeqLen: 4, Seed: 2}
		g := G.NewGraph()
		l, err := New(g, "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		rng := rand.New(rand.NewSource(5))
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, randVec(rng, T*H), T, H)))
		out, err := l.Forward(x)
		if err != nil {
			t.Fatal(err)
		}
		ks := kernels.RouterSoftmax
		if score == Sigmoid {
			ks = kernels.RouterSigmoid
		}
		want1, err := op.RouterBalanceLoss(out.IDs, out.Logits, E, 2, 1, 0.3, ks)
		if err != nil {
			t.Fatal(err)
		}
		want2, err := op.RouterBalanceLoss(out.IDs, out.Logits, E, 2, T/4, 0.2, ks)
		if err != nil {
			t.Fatal(err)
		}
		softmaxes := 0
		for _, n := range g.AllNodes() {
			if n.Op() != nil && (strings.Contains(n.Op().String(), "Softmax") || strings.Contains(n.Op().String(), "RowNormalize")) {
				softmaxes++
			}
		}
		if softmaxes != 1 {
			t.Errorf("%v: %d score ops for the two losses, want 1", score, softmaxes)
		}
		vals := make([]G.Value, 4)
		for i, n := range []*G.Node{out.AuxLoss, out.SeqAuxLoss, want1, want2} {
			G.Read(n, &vals[i])
		}
		m := G.NewTapeMachine(g)
		if err := m.RunAll(); err != nil {
			t.Fatal(err)
		}
		m.Close()
		for i := 0; i < 2; i++ {
			got, want := vals[i].Data().(float64), vals[i+2].Data().(float64)
			if math.Float64bits(got) != math.Float64bits(want) || got == 0 {
				t.Errorf("%v: loss %d = %v, op.RouterBalanceLoss %v", score, i, got, want)
			}
		}
	}
}
