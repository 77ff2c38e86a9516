package kernels

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The load-balancing loss (balance_loss.go) on hand-computed values; op/loss_test.go compares it
// with plain-loop references on random data and the GPU tests with its CUDA twin. Bad input is
// in hostile_test.go (TestLossKernelsBadInput).

func TestBalanceLossHand(t *testing.T) {
	// T=4, K=1, E=2, B=2 (S=2): sequence 0 picks experts 0, 1; sequence 1 picks 1, 1.
	// N = [[1,1],[0,2]]; P = [[1+3, 2+4], [5+7, 6+8]] = [[4,6],[12,14]];
	// Σ N·P = 4 + 6 + 0 + 28 = 38.
	ids := []int32{0, 1, 1, 1}
	s := []float64{1, 2, 3, 4, 5, 6, 7, 8}
	v, err := BalanceLossForward(ids, s, 4, 1, 2, 2, 0.5)
	if err != nil || v != 19 {
		t.Errorf("BalanceLossForward = %v, %v; want 19", v, err)
	}
	ds := make([]float64, 8)
	if err := BalanceLossBackward(ds, ids, 4, 1, 2, 2, 0.5, 3); err != nil {
		t.Fatal(err)
	}
	want := []float64{1.5, 1.5, 1.5, 1.5, 0, 3, 0, 3}
	for i := range want {
		if ds[i] != want[i] {
			t.Fatalf("BalanceLossBackward = %v, want %v", ds, want)
		}
	}
}

// TestRouterBalanceLossReference: RouterBalanceLossForward/Backward in float64 against the closed
// forms, written out here: s = softmax(x) (or σ(x)/Σσ(x)) per row, loss = scale·Σ_{b,e} N·P,
// and with a_e = scale·dy·N[b,e], g_i = a_i − Σ_e a_e·s_e: dx_i = s_i·g_i (softmax) or
// g_i/Σσ·σ_i·(1 − σ_i) (sigmoid). In place (dlogits the logits' own memory) gives the same.
func TestRouterBalanceLossReference(t *testing.T) {
	const T, K, E, B = 12, 2, 5, 3
	rng := rand.New(rand.NewPCG(11, 12))
	x := make([]float64, T*E)
	for i := range x {
		x[i] = 2 * rng.NormFloat64()
	}
	ids := make([]int32, T*K)
	for t0 := 0; t0 < T; t0++ {
		p := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t0*K+k] = int32(p[k])
		}
	}
	ids[5] = -1 // a dropped slot is not counted
	const scale, dy = 0.37, 1.3
	S := T / B
	for _, score := range []RouterScore{RouterSoftmax, RouterSigmoid} {
		N := make([]float64, B*E)
		for i, e := range ids {
			if e >= 0 {
				N[(i/K)/S*E+int(e)]++
			}
		}
		s, sg, sum := make([]float64, T*E), make([]float64, T*E), make([]float64, T)
		for t0 := 0; t0 < T; t0++ {
			row := x[t0*E : (t0+1)*E]
			m := math.Inf(-1)
			for _, v := range row {
				m = math.Max(m, v)
			}
			for e, v := range row {
				if score == RouterSoftmax {
					sg[t0*E+e] = math.Exp(v - m)
				} else {
					sg[t0*E+e] = 1 / (1 + math.Exp(-v))
				}
				sum[t0] += sg[t0*E+e]
			}
			for e := range row {
				s[t0*E+e] = sg[t0*E+e] / sum[t0]
			}
		}
		want := 0.0
		for t0 := 0; t0 < T; t0++ {
			for e := 0; e < E; e++ {
				want += scale * N[t0/S*E+e] * s[t0*E+e]
			}
		}
		wantG := make([]float64, T*E)
		for t0 := 0; t0 < T; t0++ {
			dot := 0.0
			for e := 0; e < E; e++ {
				dot += scale * dy * N[t0/S*E+e] * s[t0*E+e]
			}
			for i := 0; i < E; i++ {
				g := scale*dy*N[t0/S*E+i] - dot
				if score == RouterSoftmax {
					wantG[t0*E+i] = s[t0*E+i] * g
				} else {
					sig := sg[t0*E+i]
					wantG[t0*E+i] = g / sum[t0] * sig * (1 - sig)
				}
			}
		}
		got, err := RouterBalanceLossForward(ids, x, T, K, E, B, scale, score)
		if err != nil {
			t.Fatal(err)
		}
		if !(math.Abs(got-want) <= 1e-13*math.Abs(want)) {
			t.Errorf("%v: loss %v, want %v", score, got, want)
		}
		dx := make([]float64, T*E)
		if err := RouterBalanceLossBackward(dx, ids, x, T, K, E, B, scale, dy, score); err != nil {
			t.Fatal(err)
		}
		for i := range dx {
			if !(math.Abs(dx[i]-wantG[i]) <= 1e-13) {
				t.Fatalf("%v: dlogits[%d] = %v, want %v", score, i, dx[i], wantG[i])
			}
		}
		inPlace := append([]float64(nil), x...)
		if err := RouterBalanceLossBackward(inPlace, ids, inPlace, T, K, E, B, scale, dy, score); err != nil {
			t.Fatal(err)
		}
		for i := range dx {
			if math.Float64bits(inPlace[i]) != math.Float64bits(dx[i]) {
				t.Fatalf("%v: in place dlogits[%d] = %v, out of place %v", score, i, inPlace[i], dx[i])
			}
		}
	}
}
