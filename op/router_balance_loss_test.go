package op

import (
	"fmt"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// routerAuxChain is the unfused chain RouterBalanceLoss stands for: BalanceLoss of
// Softmax(logits), or of RowNormalize(Sigmoid(logits)).
func routerAuxChain(ids, logits *G.Node, E, K, B int, coeff float64, score kernels.RouterScore) (*G.Node, error) {
	var s *G.Node
	var err error
	if score == kernels.RouterSoftmax {
		s, err = Softmax(logits)
	} else if s, err = Sigmoid(logits); err == nil {
		s, err = RowNormalize(s)
	}
	if err != nil {
		return nil, err
	}
	return BalanceLoss(ids, s, E, K, B, coeff)
}

// TestRouterBalanceLossMatchesChain: the fused loss and its logits gradient have the bits of
// the chain of single ops, for both score functions, one sequence and several, float32 and
// float64; with two losses on the same logits (the layer's micro-batch and sequence-wise
// losses) against the chain sharing one softmax, the losses keep the bits and the gradient
// agrees to rounding (the chain adds the scores' gradients before one softmax backward).
func TestRouterBalanceLossMatchesChain(t *testing.T) {
	t.Parallel()
	const T, K, E = 12, 2, 5
	idv := lossIDs(T, K, E, 21)
	xv := randFloats(newRNG(22), T*E)
	for i := range xv {
		xv[i] *= 3
	}
	for _, score := range []kernels.RouterScore{kernels.RouterSoftmax, kernels.RouterSigmoid} {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			for _, B := range []int{1, 3} {
				name := fmt.Sprintf("%v/%v/B=%d", score, dt, B)
				build := func(fused bool) []G.Value {
					g := G.NewGraph()
					ids := idsNode(g, "ids", T, K, idv)
					x := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("x"), G.WithValue(denseOf(dt, xv, T, E)))
					f := routerAuxChain
					if fused {
						f = RouterBalanceLoss
					}
					l := must(f(ids, x, E, K, B, 0.03, score))
					grads, err := G.Backpropagate(G.Nodes{l}, G.Nodes{lossConst(1.5, dt)}, G.Nodes{x})
					if err != nil {
						t.Fatal(err)
					}
					return runRead(t, g, l, grads[0])
				}
				want, got := build(false), build(true)
				if !bitsEqual(got[0], want[0]) {
					t.Errorf("%s: loss %v, chain %v", name, got[0], want[0])
				}
				if !bitsEqual(got[1], want[1]) {
					t.Errorf("%s: dlogits %v, chain %v", name, got[1].Data(), want[1].Data())
				}
				if got[1].Shape().TotalSize() != T*E {
					t.Errorf("%s: dlogits %v", name, got[1].Shape())
				}
			}
			// Two losses (one sequence and 3) on the same logits.
			build2 := func(fused bool) []G.Value {
				g := G.NewGraph()
				ids := idsNode(g, "ids", T, K, idv)
				x := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("x"), G.WithValue(denseOf(dt, xv, T, E)))
				var l1, l2 *G.Node
				if fused {
					l1 = must(RouterBalanceLoss(ids, x, E, K, 1, 0.03, score))
					l2 = must(RouterBalanceLoss(ids, x, E, K, 3, 0.05, score))
				} else {
					var s *G.Node
					if score == kernels.RouterSoftmax {
						s = must(Softmax(x))
					} else {
						s = must(RowNormalize(must(Sigmoid(x))))
					}
					l1 = must(BalanceLoss(ids, s, E, K, 1, 0.03))
					l2 = must(BalanceLoss(ids, s, E, K, 3, 0.05))
				}
				grads, err := G.Backpropagate(G.Nodes{l1, l2}, G.Nodes{lossConst(1.5, dt), lossConst(0.5, dt)}, G.Nodes{x})
				if err != nil {
					t.Fatal(err)
				}
				return runRead(t, g, l1, l2, grads[0])
			}
			want, got := build2(false), build2(true)
			name := fmt.Sprintf("%v/%v/two losses", score, dt)
			for i := 0; i < 2; i++ {
				if !bitsEqual(got[i], want[i]) {
					t.Errorf("%s: loss %d %v, chain %v", name, i, got[i], want[i])
				}
			}
			gw, gg := toF64(t, want[2]), toF64(t, got[2])
			if d := maxRelDiff(gg, gw); d > map[tensor.Dtype]float64{tensor.Float64: 1e-12, tensor.Float32: 1e-4}[dt] {
				t.Errorf("%s: dlogits %v, chain %v (rel diff %g)", name, gg, gw, d)
			}
		}
	}
}

// TestRouterBalanceLossGradCheck compares the logits' gradient with central differences.
func TestRouterBalanceLossGradCheck(t *testing.T) {
	const T, K, E = 6, 2, 4
	ids := lossIDs(T, K, E, 7)
	for _, score := range []kernels.RouterScore{kernels.RouterSoftmax, kernels.RouterSigmoid} {
		for _, B := range []int{1, 3} {
			gcRun(t, gcCase{
				name:   fmt.Sprintf("RouterBalanceLoss %v B=%d", score, B),
				inputs: []gcInput{{"x", tensor.Shape{T, E}, randFloats(newRNG(8), T*E)}},
				build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
					l, err := RouterBalanceLoss(gcInt32Node(g, "ids", tensor.Shape{T, K}, ids), in[0], E, K, B, 0.3, score)
					if err != nil {
						return nil, err
					}
					return G.Mul(l, lossConst(1.7, dt))
				},
			})
		}
	}
}

// TestRouterBalanceLossBadInput: errors, not panics.
func TestRouterBalanceLossBadInput(t *testing.T) {
	g := G.NewGraph()
	ids := idsNode(g, "ids", 4, 2, lossIDs(4, 2, 3, 1))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 3), G.WithName("x"))
	for _, c := range []struct {
		name string
		f    func() (*G.Node, error)
		want string
	}{
		{"score 0", func() (*G.Node, error) { return RouterBalanceLoss(ids, x, 3, 2, 1, 1, 0) }, "unknown score function 0"},
		{"score 3", func() (*G.Node, error) { return RouterBalanceLoss(ids, x, 3, 2, 1, 1, 3) }, "unknown score function 3"},
		{"nil logits", func() (*G.Node, error) { return RouterBalanceLoss(ids, nil, 3, 2, 1, 1, kernels.RouterSoftmax) }, "logits is nil"},
		{"E mismatch", func() (*G.Node, error) { return RouterBalanceLoss(ids, x, 4, 2, 1, 1, kernels.RouterSoftmax) }, "logits has shape (4, 3), want (T=4, E=4)"},
	} {
		n, err := c.f()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, %v; want an error with %q", c.name, n, err, c.want)
		}
	}
	a := balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 1}
	b := balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 1, score: kernels.RouterSoftmax}
	c := balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 1, score: kernels.RouterSigmoid}
	if a.Hashcode() == b.Hashcode() || b.Hashcode() == c.Hashcode() || (balanceLossGradOp{f: b}).Hashcode() == (balanceLossGradOp{f: c}).Hashcode() {
		t.Errorf("the score function is not in the hash: %v %v %v", a, b, c)
	}
}

func ExampleRouterBalanceLoss() {
	g := G.NewGraph()
	// Two tokens, one expert each (expert 0, then expert 1), router logits over E = 2 experts.
	// The softmax scores are (σ(1), σ(−1)) and (σ(−1), σ(1)): each expert's scores add up to 1,
	// so the loss is coeff·E/(K·T²)·Σ_e N[e]·1 = 0.01·2/4·2.
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, 1}))))
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{0.5, -0.5, 0, 1}))))
	fused, err := RouterBalanceLoss(ids, logits, 2, 1, 1, 0.01, kernels.RouterSoftmax)
	if err != nil {
		fmt.Println(err)
		return
	}
	scores, err := Softmax(logits)
	if err != nil {
		fmt.Println(err)
		return
	}
	chain, err := BalanceLoss(ids, scores, 2, 1, 1, 0.01)
	if err != nil {
		fmt.Println(err)
		return
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("fused %.6f, softmax then BalanceLoss %.6f\n", fused.Value().Data(), chain.Value().Data())
	// Output:
	// fused 0.010000, softmax then BalanceLoss 0.010000
}
