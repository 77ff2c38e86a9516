package op

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Tests of BalanceLoss and ZLoss against independent plain-loop references, against the
// Gorgonia composition the moe layer used before these ops, hand-computed values, gradient
// checks and bad input.

// refBalance is the balancing loss and its gradient (for output gradient dy) by plain loops.
func refBalance(ids []int32, s []float64, T, K, E, B int, coeff, dy float64) (float64, []float64) {
	S := T / B
	n := make([][]float64, B)
	p := make([][]float64, B)
	for b := range n {
		n[b] = make([]float64, E)
		p[b] = make([]float64, E)
		for t := b * S; t < (b+1)*S; t++ {
			for k := 0; k < K; k++ {
				if id := ids[t*K+k]; id >= 0 {
					n[b][id]++
				}
			}
			for e := 0; e < E; e++ {
				p[b][e] += s[t*E+e]
			}
		}
	}
	c := coeff * float64(E) / (float64(B) * float64(K) * float64(S) * float64(S))
	var sum float64
	for b := range n {
		for e := range n[b] {
			sum += n[b][e] * p[b][e]
		}
	}
	ds := make([]float64, T*E)
	for t := 0; t < T; t++ {
		for e := 0; e < E; e++ {
			ds[t*E+e] = c * n[t/S][e] * dy
		}
	}
	return c * sum, ds
}

// refZ is the z-loss and its gradient by plain loops.
func refZ(x []float64, T, E int, coeff, dy float64) (float64, []float64) {
	var sum float64
	dx := make([]float64, T*E)
	for t := 0; t < T; t++ {
		row := x[t*E : (t+1)*E]
		m := row[0]
		for _, v := range row {
			m = math.Max(m, v)
		}
		var z float64
		for _, v := range row {
			z += math.Exp(v - m)
		}
		lse := m + math.Log(z)
		sum += lse * lse
		for e, v := range row {
			dx[t*E+e] = coeff / float64(T) * 2 * lse * math.Exp(v-m) / z * dy
		}
	}
	return coeff / float64(T) * sum, dx
}

// lossIDs returns T·K distinct-per-token expert ids in [0, E), with -1 at every 7th pair.
func lossIDs(T, K, E int, seed uint64) []int32 {
	rng := newRNG(seed)
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(perm[k])
			if (t*K+k)%7 == 3 {
				ids[t*K+k] = -1
			}
		}
	}
	return ids
}

// layerBalance and layerZ are the moe layer's loss compositions before these ops (gorgonia
// built-ins, moe/layer.go), without the final cast.
func layerBalance(ids, scores *G.Node, E, K, B int, coeff float64, dt tensor.Dtype) (*G.Node, error) {
	T := scores.Shape()[0]
	S := T / B
	load, err := ExpertLoad(ids, E, B, dt)
	if err != nil {
		return nil, err
	}
	s3, err := G.Reshape(scores, tensor.Shape{B, S, E})
	if err != nil {
		return nil, err
	}
	P, err := G.Sum(s3, 1)
	if err != nil {
		return nil, err
	}
	if B == 1 {
		if P, err = G.Reshape(P, tensor.Shape{1, E}); err != nil {
			return nil, err
		}
	}
	prod, err := G.HadamardProd(load, P)
	if err != nil {
		return nil, err
	}
	dot, err := G.Sum(prod)
	if err != nil {
		return nil, err
	}
	return G.Mul(dot, lossConst(coeff*float64(E)/(float64(B)*float64(K)*float64(S)*float64(S)), dt))
}

func layerZ(logits *G.Node, coeff float64, dt tensor.Dtype) (*G.Node, error) {
	lse, err := RowLogSumExp(logits)
	if err != nil {
		return nil, err
	}
	sq, err := G.Square(lse)
	if err != nil {
		return nil, err
	}
	z, err := G.Sum(sq)
	if err != nil {
		return nil, err
	}
	return G.Mul(z, lossConst(coeff/float64(logits.Shape()[0]), dt))
}

func lossConst(v float64, dt tensor.Dtype) *G.Node {
	if dt == tensor.Float32 {
		return G.NewConstant(float32(v))
	}
	return G.NewConstant(v)
}

func lossClose(t *testing.T, what string, got, want []float64, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(got[i] - want[i]); !(d <= rel*math.Abs(want[i])+1e-300) {
			t.Fatalf("%s[%d] = %v, want %v (rel diff %g, tolerance %g)", what, i, got[i], want[i], d/math.Abs(want[i]), rel)
		}
	}
}

type lossCase struct {
	name        string
	T, K, E, B  int
	coeff, seed float64
}

// lossCases cover one and several sequences, sequences of more than one chunk
// (kernels.LossChunk = 64) with a partial last chunk, and B·E past the 256 lanes.
var lossCases = []lossCase{
	{"T8 K2 E4 B1", 8, 2, 4, 1, 0.01, 1},
	{"T8 K2 E4 B4", 8, 2, 4, 4, 1, 2},
	{"T130 K3 E9 B1", 130, 3, 9, 1, 0.5, 3},
	{"T200 K2 E16 B2", 200, 2, 16, 2, 2, 4},
	{"T300 K3 E40 B10", 300, 3, 40, 10, 1e-3, 5},
	{"T64 K1 E1 B1", 64, 1, 1, 1, 1, 6},
}

// checkLossOp runs the loss op (byOp) and the layer composition it replaces (byLayer) on x
// [T,E] with runLoss, and checks the op's loss and gradient against the reference (want,
// wantG) within rel and against the composition's within relOld.
func checkLossOp(t *testing.T, dt tensor.Dtype, x []float64, T, E int, byOp, byLayer func(g *G.ExprGraph, x *G.Node) (*G.Node, error), want float64, wantG []float64, rel, relOld float64) {
	t.Helper()
	got, gotG := runLoss(t, dt, x, T, E, byOp)
	old, oldG := runLoss(t, dt, x, T, E, byLayer)
	lossClose(t, "loss vs reference", []float64{got}, []float64{want}, rel)
	lossClose(t, "gradient vs reference", gotG, wantG, rel)
	lossClose(t, "loss vs layer composition", []float64{got}, []float64{old}, relOld)
	lossClose(t, "gradient vs layer composition", gotG, oldG, relOld)
}

// runLoss builds loss (and the gradient of 0.7·loss wrt the float input x) and returns the
// loss and gradient values.
func runLoss(t *testing.T, dt tensor.Dtype, xdata []float64, T, E int, build func(g *G.ExprGraph, x *G.Node) (*G.Node, error)) (float64, []float64) {
	t.Helper()
	g := G.NewGraph()
	x := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("x"), G.WithValue(denseOf(dt, xdata, T, E)))
	loss, err := build(g, x)
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	cost, err := G.Mul(loss, lossConst(0.7, dt))
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Grad(cost, x)
	if err != nil {
		t.Fatalf("Grad: %v", err)
	}
	var lv, gv G.Value
	G.Read(loss, &lv)
	G.Read(grads[0], &gv)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatalf("RunAll: %v", err)
	}
	if !loss.IsScalar() || lv.Shape().Dims() != 0 || lv.Dtype() != dt {
		t.Fatalf("loss is %v %v (node scalar: %v), want a %v scalar", lv.Dtype(), lv.Shape(), loss.IsScalar(), dt)
	}
	return gcFloats(lv)[0], gcFloats(gv)
}

func TestBalanceLoss(t *testing.T) {
	for _, c := range lossCases {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				ids := lossIDs(c.T, c.K, c.E, uint64(c.seed))
				s := randFloats(newRNG(uint64(c.seed)+10), c.T*c.E)
				if dt == tensor.Float32 {
					for i := range s {
						s[i] = float64(float32(s[i]))
					}
				}
				want, wantG := refBalance(ids, s, c.T, c.K, c.E, c.B, c.coeff, 0.7)
				if dt == tensor.Float32 {
					// The gradient is rounded once from float64; the scale 0.7 is the float32 0.7.
					_, wantG = refBalance(ids, s, c.T, c.K, c.E, c.B, c.coeff, float64(float32(0.7)))
				}
				byOp := func(g *G.ExprGraph, x *G.Node) (*G.Node, error) {
					return BalanceLoss(idsNode(g, "ids", c.T, c.K, ids), x, c.E, c.K, c.B, c.coeff)
				}
				byLayer := func(g *G.ExprGraph, x *G.Node) (*G.Node, error) {
					return layerBalance(idsNode(g, "ids", c.T, c.K, ids), x, c.E, c.K, c.B, c.coeff, dt)
				}
				// float64: the op sums in another order than the plain loops; float32: the
				// op rounds once from float64 (1 ulp), the composition sums in float32.
				rel, relOld := 1e-13, 1e-12
				if dt == tensor.Float32 {
					rel, relOld = 6e-8, 2e-6
				}
				checkLossOp(t, dt, s, c.T, c.E, byOp, byLayer, want, wantG, rel, relOld)
			})
		}
	}
}

func TestZLoss(t *testing.T) {
	for _, c := range lossCases {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				x := randFloats(newRNG(uint64(c.seed)+20), c.T*c.E)
				for i := range x {
					x[i] *= 4
					if dt == tensor.Float32 {
						x[i] = float64(float32(x[i]))
					}
				}
				dy := 0.7
				if dt == tensor.Float32 {
					dy = float64(float32(0.7))
				}
				want, wantG := refZ(x, c.T, c.E, c.coeff, dy)
				byOp := func(g *G.ExprGraph, x *G.Node) (*G.Node, error) { return ZLoss(x, c.coeff) }
				byLayer := func(g *G.ExprGraph, x *G.Node) (*G.Node, error) { return layerZ(x, c.coeff, dt) }
				rel, relOld := 1e-13, 1e-12
				if dt == tensor.Float32 {
					rel, relOld = 6e-8, 4e-6
				}
				checkLossOp(t, dt, x, c.T, c.E, byOp, byLayer, want, wantG, rel, relOld)
			})
		}
	}
}

// TestLossHand checks values computed by hand.
func TestLossHand(t *testing.T) {
	// T=2, K=1, E=2, one sequence: N = (1, 1), P = (0.6+0.3, 0.4+0.7) = (0.9, 1.1),
	// Σ N·P = 2, scale = coeff·2/(1·1·2²) = coeff/2: loss = 1 for coeff 1; dscores = 0.5·N.
	g := G.NewGraph()
	ids := idsNode(g, "ids", 2, 1, []int32{0, 1})
	s := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("s"), G.WithValue(denseOf(tensor.Float64, []float64{0.6, 0.4, 0.3, 0.7}, 2, 2)))
	// z-loss of logits (0, 0) and (log 3, 0): lse = log 2 and log 4 = 2·log 2, so
	// Σ lse² = 5·log²2 and the loss (coeff 2, T 2) is 5·log²2.
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("x"), G.WithValue(denseOf(tensor.Float64, []float64{0, 0, math.Log(3), 0}, 2, 2)))
	bl := must(BalanceLoss(ids, s, 2, 1, 1, 1))
	zl := must(ZLoss(x, 2))
	got := runRead(t, g, bl, zl)
	if v := gcFloats(got[0])[0]; math.Abs(v-1) > 1e-15 {
		t.Errorf("balance loss = %v, want 1", v)
	}
	if v, w := gcFloats(got[1])[0], 5*math.Ln2*math.Ln2; math.Abs(v-w) > 1e-15 {
		t.Errorf("z-loss = %v, want %v", v, w)
	}
}

// TestLossGradCheck compares the gradients with central differences through SymDiff (tape
// machine) and DoDiff (lisp machine).
func TestLossGradCheck(t *testing.T) {
	const T, K, E = 6, 2, 4
	ids := lossIDs(T, K, E, 7)
	for _, B := range []int{1, 3} {
		gcRun(t, gcCase{
			name:   fmt.Sprintf("BalanceLoss B=%d", B),
			inputs: []gcInput{{"s", tensor.Shape{T, E}, randFloats(newRNG(8), T*E)}},
			build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				l, err := BalanceLoss(gcInt32Node(g, "ids", tensor.Shape{T, K}, ids), in[0], E, K, B, 0.3)
				if err != nil {
					return nil, err
				}
				return G.Mul(l, lossConst(1.7, dt))
			},
		})
	}
	gcRun(t, gcCase{
		name:   "ZLoss",
		inputs: []gcInput{{"x", tensor.Shape{T, E}, randFloats(newRNG(9), T*E)}},
		build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			l, err := ZLoss(in[0], 0.3)
			if err != nil {
				return nil, err
			}
			return G.Mul(l, lossConst(1.7, dt))
		},
	})
}

// TestLossSeed runs the gradient ops with every form of host output gradient: gorgonia's
// scalar, a scalar-shaped tensor and a one-element vector.
func TestLossSeed(t *testing.T) {
	const T, K, E = 4, 2, 3
	ids := int32Dense(lossIDs(T, K, E, 1), T, K)
	s := denseOf(tensor.Float64, randFloats(newRNG(2), T*E), T, E)
	bg := balanceLossGradOp{f: balanceLossOp{e: E, k: K, seqs: 2, coeff: 0.5}}
	zg := zLossGradOp{coeff: 0.5}
	var want [2]G.Value
	for i, dy := range []G.Value{G.NewF64(1.25), tensor.New(tensor.FromScalar(1.25)), tensor.New(tensor.WithShape(1), tensor.WithBacking([]float64{1.25}))} {
		b, err := bg.Do(ids, s, dy)
		if err != nil {
			t.Fatalf("dy %T %v: BalanceLossGrad: %v", dy, dy.Shape(), err)
		}
		z, err := zg.Do(s, dy)
		if err != nil {
			t.Fatalf("dy %T %v: ZLossGrad: %v", dy, dy.Shape(), err)
		}
		if i == 0 {
			want = [2]G.Value{b, z}
			_, ref := refBalance(ids.Int32s(), s.Float64s(), T, K, E, 2, 0.5, 1.25)
			lossClose(t, "BalanceLossGrad", gcFloats(b), ref, 1e-15)
			_, ref = refZ(s.Float64s(), T, E, 0.5, 1.25)
			lossClose(t, "ZLossGrad", gcFloats(z), ref, 1e-14)
			continue
		}
		if !bitsEqual(b, want[0]) || !bitsEqual(z, want[1]) {
			t.Errorf("dy %T %v: gradients differ from the scalar seed's", dy, dy.Shape())
		}
	}
}

// TestLossDeterministic runs the ops twice on the same inputs: the bits agree.
func TestLossDeterministic(t *testing.T) {
	const T, K, E = 300, 3, 40
	ids := int32Dense(lossIDs(T, K, E, 3), T, K)
	s := denseOf(tensor.Float32, randFloats(newRNG(4), T*E), T, E)
	for i := 0; i < 2; i++ {
		a, err := balanceLossOp{e: E, k: K, seqs: 10, coeff: 1}.Do(ids, s)
		if err != nil {
			t.Fatal(err)
		}
		b, err := balanceLossOp{e: E, k: K, seqs: 10, coeff: 1}.Do(ids, s)
		if err != nil {
			t.Fatal(err)
		}
		z1, _ := zLossOp{coeff: 1}.Do(s)
		z2, _ := zLossOp{coeff: 1}.Do(s)
		if !bitsEqual(a, b) || !bitsEqual(z1, z2) {
			t.Fatalf("run %d: %v vs %v, %v vs %v", i, a, b, z1, z2)
		}
	}
}

// TestLossBadInput checks the errors of the node functions and of Do.
func TestLossBadInput(t *testing.T) {
	g := G.NewGraph()
	ids := idsNode(g, "ids", 4, 2, []int32{0, 1, 1, 2, 2, 0, -1, 1})
	s := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 3), G.WithName("s"), G.WithValue(denseOf(tensor.Float64, make([]float64, 12), 4, 3)))
	s32 := G.NewMatrix(g, tensor.Float32, G.WithShape(4, 3), G.WithName("s32"), G.WithValue(denseOf(tensor.Float32, make([]float64, 12), 4, 3)))
	si := G.NewMatrix(g, tensor.Int32, G.WithShape(4, 3), G.WithName("si"), G.WithValue(int32Dense(make([]int32, 12), 4, 3)))
	vec := G.NewVector(g, tensor.Float64, G.WithShape(4), G.WithName("vec"), G.WithValue(denseOf(tensor.Float64, make([]float64, 4), 4)))
	other := G.NewGraph()
	s2 := G.NewMatrix(other, tensor.Float64, G.WithShape(4, 3), G.WithName("s2"), G.WithValue(denseOf(tensor.Float64, make([]float64, 12), 4, 3)))
	ids5 := idsNode(g, "ids5", 5, 2, make([]int32, 10))
	for _, c := range []struct {
		name string
		fn   func() (*G.Node, error)
		want string
	}{
		{"nil ids", func() (*G.Node, error) { return BalanceLoss(nil, s, 3, 2, 1, 1) }, "ids is nil"},
		{"nil scores", func() (*G.Node, error) { return BalanceLoss(ids, nil, 3, 2, 1, 1) }, "scores is nil"},
		{"other graph", func() (*G.Node, error) { return BalanceLoss(ids, s2, 3, 2, 1, 1) }, "another graph"},
		{"float ids", func() (*G.Node, error) { return BalanceLoss(s, s, 3, 2, 1, 1) }, "ids has dtype float64, want int32"},
		{"int scores", func() (*G.Node, error) { return BalanceLoss(ids, si, 3, 2, 1, 1) }, "scores has dtype int32"},
		{"K mismatch", func() (*G.Node, error) { return BalanceLoss(ids, s, 3, 3, 1, 1) }, "ids has shape (4, 2), want (T>=1, K=3)"},
		{"E mismatch", func() (*G.Node, error) { return BalanceLoss(ids, s, 4, 2, 1, 1) }, "scores has shape (4, 3), want (T=4, E=4)"},
		{"T mismatch", func() (*G.Node, error) { return BalanceLoss(ids5, s, 3, 2, 1, 1) }, "scores has shape (4, 3), want (T=5, E=3)"},
		{"seqs", func() (*G.Node, error) { return BalanceLoss(ids, s, 3, 2, 3, 1) }, "T=4 tokens do not split into 3 equal sequences"},
		{"seqs 0", func() (*G.Node, error) { return BalanceLoss(ids, s, 3, 2, 0, 1) }, "do not split into 0"},
		{"E 0", func() (*G.Node, error) { return BalanceLoss(ids, s, 0, 2, 1, 1) }, "E=0 experts"},
		{"NaN coeff", func() (*G.Node, error) { return BalanceLoss(ids, s, 3, 2, 1, math.NaN()) }, "coefficient NaN is not finite"},
		{"z nil", func() (*G.Node, error) { return ZLoss(nil, 1) }, "logits is nil"},
		{"z int", func() (*G.Node, error) { return ZLoss(si, 1) }, "logits has dtype int32"},
		{"z vector", func() (*G.Node, error) { return ZLoss(vec, 1) }, "logits has shape (4), want (T>=1, E>=1)"},
		{"z inf coeff", func() (*G.Node, error) { return ZLoss(s32, math.Inf(1)) }, "coefficient +Inf is not finite"},
	} {
		n, err := c.fn()
		if err == nil || n != nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, %v; want an error containing %q", c.name, n, err, c.want)
		}
	}

	// Do: an id out of range, wrong values; the inputs are left as they were.
	bad := int32Dense([]int32{0, 1, 1, 3, 2, 0, -1, 1}, 4, 2)
	sv := denseOf(tensor.Float64, []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, 4, 3)
	op := balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 1}
	for _, c := range []struct {
		name string
		fn   func() (G.Value, error)
		want string
	}{
		{"id out of range", func() (G.Value, error) { return op.Do(bad, sv) }, "ids[1,1] = 3 is out of range [-1, 3)"},
		{"grad id out of range", func() (G.Value, error) { return balanceLossGradOp{f: op}.Do(bad, sv, G.NewF64(1)) }, "ids[1,1] = 3 is out of range"},
		{"arity", func() (G.Value, error) { return op.Do(bad) }, "got 1 inputs, want 2"},
		{"scores shape", func() (G.Value, error) { return op.Do(bad, denseOf(tensor.Float64, make([]float64, 8), 4, 2)) }, "scores has shape (4, 2), want (T=4, E=3)"},
		{"grad dy dtype", func() (G.Value, error) { return balanceLossGradOp{f: op}.Do(bad, sv, G.NewF32(1)) }, "output gradient has dtype float32, want float64"},
		{"grad dy shape", func() (G.Value, error) { return zLossGradOp{coeff: 1}.Do(sv, sv) }, "output gradient has shape (4, 3), want a scalar"},
		{"grad dy nil", func() (G.Value, error) { return zLossGradOp{coeff: 1}.Do(sv, nil) }, "input 1 is nil"},
		{"z shape", func() (G.Value, error) { return zLossOp{coeff: 1}.Do(denseOf(tensor.Float64, make([]float64, 4), 4)) }, "logits has shape (4), want (T>=1, E>=1)"},
	} {
		v, err := c.fn()
		if err == nil || v != nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, %v; want an error containing %q", c.name, v, err, c.want)
		}
	}
	if fmt.Sprint(bad.Int32s()) != "[0 1 1 3 2 0 -1 1]" || sv.Float64s()[11] != 12 {
		t.Errorf("inputs modified: %v %v", bad.Int32s(), sv.Float64s())
	}
}

// TestLossHash checks that ops with different parameters are different nodes.
func TestLossHash(t *testing.T) {
	ops := []G.Op{
		balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 1}, balanceLossOp{e: 3, k: 2, seqs: 2, coeff: 1},
		balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 0.5}, balanceLossOp{e: 4, k: 2, seqs: 1, coeff: 1},
		balanceLossOp{e: 3, k: 1, seqs: 1, coeff: 1}, zLossOp{coeff: 1}, zLossOp{coeff: 0.5},
		balanceLossGradOp{f: balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 1}}, zLossGradOp{coeff: 1},
	}
	seen := map[uint32]string{}
	for _, o := range ops {
		if prev, ok := seen[o.Hashcode()]; ok {
			t.Errorf("%v and %v hash alike", prev, o)
		}
		seen[o.Hashcode()] = o.String()
	}
}

func ExampleBalanceLoss() {
	g := G.NewGraph()
	// Two tokens, one expert each (expert 0, then expert 1), scores over E = 2 experts.
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, 1}))))
	scores := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("scores"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{0.6, 0.4, 0.3, 0.7}))))
	loss, err := BalanceLoss(ids, scores, 2, 1, 1, 0.01)
	if err != nil {
		fmt.Println(err)
		return
	}
	grads, err := G.Grad(loss, scores)
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
	fmt.Printf("loss %.4f\n", loss.Value().Data())
	fmt.Printf("dscores %.4f\n", grads[0].Value().Data())
	// Output:
	// loss 0.0100
	// dscores [0.0050 0.0050 0.0050 0.0050]
}

func ExampleZLoss() {
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(1, 2), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(1, 2), tensor.WithBacking([]float64{0, 0}))))
	loss, err := ZLoss(logits, 1)
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
	fmt.Printf("loss %.6f (log²2 = %.6f)\n", loss.Value().Data(), math.Ln2*math.Ln2)
	// Output:
	// loss 0.480453 (log²2 = 0.480453)
}
