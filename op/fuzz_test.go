package op

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// FuzzRouteGraph builds the op-level path a user writes — NewPlan, Permute, Unpermute with
// probs, a cost and its gradients — from fuzzed ids (some out of range or repeated) and a
// fuzzed geometry, and runs it on the tape machine. Invalid ids must fail the run with an
// error and no panic, leaving the inputs as they were; valid ones must give the output and the
// gradients of plain loops: y[t] = Σ_k probs[t,k]·x[t] over the kept slots,
// dx[t] = Σ_k probs[t,k]·w[t] and dprobs[t,k] = ⟨x[t], w[t]⟩ for the kept slots (0 otherwise),
// for the cost Σ w ⊙ y.
func FuzzRouteGraph(f *testing.F) {
	f.Add(uint8(5), uint8(2), uint8(4), uint8(1), uint8(3), uint8(0), []byte{3, 4, 5, 6, 7, 8})
	f.Add(uint8(12), uint8(3), uint8(5), uint8(2), uint8(2), uint8(2), []byte{200, 1, 7})
	f.Add(uint8(7), uint8(1), uint8(3), uint8(3), uint8(1), uint8(3), []byte{0})
	f.Fuzz(func(t *testing.T, t8, k8, e8, a8, c8, mode8 uint8, raw []byte) {
		g := kernels.Geometry{T: int(t8%16) + 1, K: int(k8%4) + 1, E: int(e8%6) + 1, A: int(a8%4) + 1}
		switch mode8 % 4 {
		case 1:
			g.Mode, g.C, g.Drop = kernels.Capacity, int(c8%6)+1, kernels.DropByPosition
		case 2:
			g.Mode, g.C, g.Drop = kernels.Capacity, int(c8%6)+1, kernels.DropByProb
		case 3:
			g.Mode, g.C, g.Drop, g.PadToCapacity = kernels.Capacity, int(c8%6)+1, kernels.DropByProb, true
		}
		if g.K > g.E {
			return // NewPlan rejects it at build time (covered by the bad-input table)
		}
		const H = 3
		T, K := g.T, g.K
		ids := make([]int32, T*K)
		probs := make([]float64, T*K)
		for i := range ids {
			var b byte
			if len(raw) > 0 {
				b = raw[i%len(raw)] + byte(i/len(raw))
			}
			ids[i] = int32(int(b)%(g.E+2)) - 1 // [-1, E]: E is out of range
			probs[i] = float64(b%5)/4 + 0.125
		}
		x := make([]float64, T*H)
		w := make([]float64, T*H)
		for i := range x {
			x[i] = float64(i%7) - 3
			w[i] = float64(i%5)/2 - 1
		}
		gr := G.NewGraph()
		idn := idsNode(gr, "ids", T, K, ids)
		pn := G.NewMatrix(gr, tensor.Float64, G.WithShape(T, K), G.WithName("probs"), G.WithValue(denseOf(tensor.Float64, probs, T, K)))
		xn := G.NewMatrix(gr, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, x, T, H)))
		wn := G.NewMatrix(gr, tensor.Float64, G.WithShape(T, H), G.WithName("w"), G.WithValue(denseOf(tensor.Float64, w, T, H)))
		var planProbs *G.Node
		if g.Mode == kernels.Capacity && g.Drop == kernels.DropByProb {
			planProbs = pn
		}
		p, err := NewPlan(idn, planProbs, g)
		if err != nil {
			t.Fatalf("NewPlan: %v", err)
		}
		xp := must(Permute(xn, p))
		y := must(Unpermute(xp, pn, p))
		cost := must(G.Sum(must(G.HadamardProd(y, wn))))
		grads, err := G.Grad(cost, xn, pn)
		if err != nil {
			t.Fatal(err)
		}
		var yv, dxv, dpv G.Value
		G.Read(y, &yv)
		G.Read(grads[0], &dxv)
		G.Read(grads[1], &dpv)
		m := G.NewTapeMachine(gr)
		defer m.Close()
		var runErr error
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("panic: %v", r)
				}
			}()
			runErr = m.RunAll()
		}()
		g.T, g.K = T, K
		if g.CheckIDs(ids) != nil {
			if runErr == nil {
				t.Fatalf("invalid ids %v ran without an error", ids)
			}
			for _, c := range []struct {
				n    *G.Node
				want []float64
			}{{xn, x}, {pn, probs}, {wn, w}} {
				if got := c.n.Value().Data().([]float64); maxRelDiff(got, c.want) != 0 {
					t.Fatalf("%s was modified by the failed run", c.n.Name())
				}
			}
			return
		}
		if runErr != nil {
			t.Fatalf("valid ids %v: %v", ids, runErr)
		}
		rowOf := refPlan(g, ids, probs).RowOf
		wantY := make([]float64, T*H)
		wantDx := make([]float64, T*H)
		wantDp := make([]float64, T*K)
		for t0 := 0; t0 < T; t0++ {
			for k := 0; k < K; k++ {
				if rowOf[t0*K+k] < 0 {
					continue
				}
				pr := probs[t0*K+k]
				for h := 0; h < H; h++ {
					wantY[t0*H+h] += pr * x[t0*H+h]
					wantDx[t0*H+h] += pr * w[t0*H+h]
					wantDp[t0*K+k] += x[t0*H+h] * w[t0*H+h]
				}
			}
		}
		for _, c := range []struct {
			what string
			got  G.Value
			want []float64
		}{{"y", yv, wantY}, {"dx", dxv, wantDx}, {"dprobs", dpv, wantDp}} {
			if d := maxRelDiff(c.got.Data().([]float64), c.want); !(d <= 1e-12) {
				t.Fatalf("%s differs from the reference by %g (%v ids %v)", c.what, d, g, ids)
			}
		}
	})
}
