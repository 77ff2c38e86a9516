package moe

import (
	"fmt"
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSoftmaxRowFarAboveFirstElement is the regression test for gorgonia's SoftMax (tensor
// v0.9.24), whose kernel starts every row's maximum from the first element of the whole
// tensor and skips the row's own first element: a row whose logits lie far above logits[0,0]
// overflowed exp to Inf and gave NaN probs. Here logits = x (identity router) with row 0 all
// zeros and rows 1 and 2 holding a logit of big, beyond exp's range in the dtype. The layer's
// probs must equal a plain-loop stable softmax, and Y, the losses and the gradients must be
// finite.
func TestSoftmaxRowFarAboveFirstElement(t *testing.T) {
	const T, H, E, K = 3, 3, 3, 2
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		big, tol := 100.0, 1e-6 // exp(100) overflows float32
		if dt == tensor.Float64 {
			big, tol = 1000, 1e-12 // exp(1000) overflows float64
		}
		x := []float64{
			0, 0, 0,
			big, 0, -1,
			-1, big / 2, big,
		}
		for _, pre := range []bool{true, false} {
			t.Run(fmt.Sprintf("%v/PreSoftmax=%v", dt, pre), func(t *testing.T) {
				cfg := Config{Hidden: H, FFN: 2, Experts: E, TopK: K, Dtype: dt, PreSoftmax: pre,
					AuxLossCoeff: 0.01, SeqAuxLossCoeff: 0.01, SeqLen: T, ZLossCoeff: 1e-3, Seed: 7}
				g := G.NewGraph()
				l, err := New(g, "moe", cfg)
				if err != nil {
					t.Fatal(err)
				}
				switch r := l.Router.Value().Data().(type) { // identity router: logits = x
				case []float32:
					for i := range r {
						r[i] = float32(b2f(i/E == i%E))
					}
				case []float64:
					for i := range r {
						r[i] = b2f(i/E == i%E)
					}
				}
				xn := G.NewMatrix(g, dt, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(dt, x, T, H)))
				out, err := l.Forward(xn)
				if err != nil {
					t.Fatal(err)
				}
				cost, err := G.Sum(out.Y)
				if err != nil {
					t.Fatal(err)
				}
				if cost, err = G.Add(cost, out.Loss); err != nil {
					t.Fatal(err)
				}
				if _, err := G.Grad(cost, append(G.Nodes{xn}, l.Learnables()...)...); err != nil {
					t.Fatal(err)
				}
				var yV, probsV, idsV, lossV G.Value
				G.Read(out.Y, &yV)
				G.Read(out.Probs, &probsV)
				G.Read(out.IDs, &idsV)
				G.Read(out.Loss, &lossV)
				m := G.NewTapeMachine(g)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					t.Fatal(err)
				}
				ids := idsV.Data().([]int32)
				probs := f64s(probsV)
				for tok := 0; tok < T; tok++ {
					row := x[tok*E : (tok+1)*E]
					var want []float64
					if pre {
						sm := refSoftmax(row)
						for k := 0; k < K; k++ {
							want = append(want, sm[ids[tok*K+k]])
						}
					} else {
						chosen := make([]float64, K)
						for k := range chosen {
							chosen[k] = row[ids[tok*K+k]]
						}
						want = refSoftmax(chosen)
					}
					for k := 0; k < K; k++ {
						if got := probs[tok*K+k]; !(math.Abs(got-want[k]) <= tol) {
							t.Errorf("probs[%d,%d] = %v, want %v", tok, k, got, want[k])
						}
					}
				}
				// Rows 1 and 2 choose their two largest logits.
				for _, c := range []struct{ tok, e0, e1 int32 }{{1, 0, 1}, {2, 2, 1}} {
					a, b := ids[c.tok*K], ids[c.tok*K+1]
					if !(a == c.e0 && b == c.e1 || a == c.e1 && b == c.e0) {
						t.Errorf("ids[%d] = %v, want {%d, %d}", c.tok, ids[c.tok*K:c.tok*K+K], c.e0, c.e1)
					}
				}
				finite := func(what string, v []float64) {
					t.Helper()
					for i, f := range v {
						if math.IsNaN(f) || math.IsInf(f, 0) {
							t.Fatalf("%s[%d] = %v", what, i, f)
						}
					}
				}
				finite("Y", f64s(yV))
				finite("Loss", f64s(lossV))
				for _, n := range append(G.Nodes{xn}, l.Learnables()...) {
					gv, err := n.Grad()
					if err != nil {
						t.Fatal(err)
					}
					finite("d"+n.Name(), f64s(gv))
				}
			})
		}
	}
}
