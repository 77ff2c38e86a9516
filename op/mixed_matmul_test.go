package op

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestMixedMatMul: with one dtype throughout, MixedMatMul's gradients (through a chain of two
// products, which runs three of the four transposition forms) match central differences in
// float64 and float32; its float64 product equals a plain loop, and so does its CPU product of
// a bfloat16 aᵀ and a float32 bᵀ (the fourth form) in float32.
func TestMixedMatMul(t *testing.T) {
	rng := rand.New(rand.NewSource(18))
	a, b := gcRand(rng, 3*4), gcRand(rng, 4*5)
	gcRun(t, gcCase{name: "MixedMatMul", inputs: []gcInput{{"a", tensor.Shape{3, 4}, a}, {"b", tensor.Shape{4, 5}, b}}, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
		y, err := MixedMatMul(in[0], in[1], dt)
		if err != nil {
			return nil, err
		}
		c := G.NewMatrix(g, dt, G.WithShape(5, 2), G.WithName("c"), G.WithValue(gcDense(dt, tensor.Shape{5, 2}, gcRand(rand.New(rand.NewSource(19)), 10))))
		y2, err := MixedMatMul(y, c, dt)
		if err != nil {
			return nil, err
		}
		return gcWeighted(g, dt, y2, "w_mixed", 11)
	}})
	checkProduct345(t, a, b, func(a, b *G.Node) (*G.Node, error) { return MixedMatMul(a, b, tensor.Float64) })
	// c [3,5] = aᵀ·bᵀ, a stored [4,3] in bfloat16, b stored [5,4] in float32.
	at := bf16Of(a, 4, 3)
	bt := gcDense(tensor.Float32, tensor.Shape{5, 4}, b)
	cv, err := mixedMatMulOp{ta: true, tb: true, a: bfloat16.Dtype, b: tensor.Float32, out: tensor.Float32}.Do(at, bt)
	if err != nil {
		t.Fatal(err)
	}
	aw, bw, c := bf16Widen(t, at), f32Data(t, bt), f32Data(t, cv)
	for i := 0; i < 3; i++ {
		for j := 0; j < 5; j++ {
			var s float64
			for k := 0; k < 4; k++ {
				s += float64(aw[k*3+i]) * float64(bw[j*4+k])
			}
			if !(math.Abs(float64(c[i*5+j])-s) <= 1e-6) {
				t.Fatalf("aᵀ·bᵀ [%d,%d] = %v, want %v", i, j, c[i*5+j], s)
			}
		}
	}
}

// TestMixedMatMulRouter: the bfloat16 layer's router form, logits (float32) = x (bfloat16) ·
// w (float32), on the CPU: the logits and both gradients (dx in bfloat16, dw in float32) are
// within float32 rounding of float64 loops over the same inputs (dx: within half a bfloat16
// step more), and bit for bit those of Cast and MatMul, which the layer used before.
func TestMixedMatMulRouter(t *testing.T) {
	const T, H, E = 7, 33, 5
	rng := rand.New(rand.NewSource(20))
	xd, wd, cd := gcRand(rng, T*H), gcRand(rng, H*E), gcRand(rng, T*E)
	xb := bf16Of(xd, T, H)
	xw := bf16Widen(t, xb) // x's exact values
	build := func(mixed bool) (x, w, logits *G.Node, vals []G.Value) {
		g := G.NewGraph()
		x = G.NewMatrix(g, bfloat16.Dtype, G.WithShape(T, H), G.WithName("x"), G.WithValue(xb.Clone()))
		w = G.NewMatrix(g, tensor.Float32, G.WithShape(H, E), G.WithName("w"), G.WithValue(gcDense(tensor.Float32, tensor.Shape{H, E}, wd)))
		if mixed {
			logits = must(MixedMatMul(x, w, tensor.Float32))
		} else {
			logits = must(MatMul(must(Cast(x, tensor.Float32)), w))
		}
		c := G.NewMatrix(g, tensor.Float32, G.WithShape(T, E), G.WithName("c"), G.WithValue(gcDense(tensor.Float32, tensor.Shape{T, E}, cd)))
		cost := must(G.Sum(must(G.HadamardProd(logits, c))))
		grads, err := G.Grad(cost, x, w)
		if err != nil {
			t.Fatal(err)
		}
		return x, w, logits, runRead(t, g, logits, grads[0], grads[1])
	}
	_, _, _, got := build(true)
	_, _, _, old := build(false)
	for i, what := range []string{"logits", "dx", "dw"} {
		if !bitsEqual(got[i], old[i]) {
			t.Errorf("%s: not the bits of Cast and MatMul", what)
		}
	}
	x := func(i, k int) float64 { return float64(xw[i*H+k]) }
	w := func(k, j int) float64 { return float64(float32(wd[k*E+j])) }
	dl := func(i, j int) float64 { return float64(float32(cd[i*E+j])) }
	wantProduct(t, "logits", f32Data(t, got[0]), T, E, H, x, w, false)
	wantProduct(t, "dx", bf16Widen(t, got[1]), T, H, E, dl, func(j, k int) float64 { return w(k, j) }, true)
	wantProduct(t, "dw", f32Data(t, got[2]), H, E, T, func(k, i int) float64 { return x(i, k) }, dl, false)
}

// wantProduct checks got [m,n] against Σ_l a(i,l)·b(l,j) summed in float64: within k·2⁻²⁴ of
// Σ|a·b| (float32 accumulation), plus half a bfloat16 step of the sum when bf16 is set.
func wantProduct(t *testing.T, what string, got []float32, m, n, k int, a, b func(i, j int) float64, bf16 bool) {
	t.Helper()
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			var s, sa float64
			for l := 0; l < k; l++ {
				p := a(i, l) * b(l, j)
				s, sa = s+p, sa+math.Abs(p)
			}
			lim := sa * float64(k) * 0x1p-24
			if bf16 {
				lim += math.Abs(s) * 0x1p-8
			}
			if d := math.Abs(float64(got[i*n+j]) - s); d > lim {
				t.Fatalf("%s[%d,%d] = %v, want %v", what, i, j, got[i*n+j], s)
			}
		}
	}
}

// TestMixedMatMulErrors: bad inputs give errors naming the problem.
func TestMixedMatMulErrors(t *testing.T) {
	g := G.NewGraph()
	m := func(dt tensor.Dtype, name string, r, c int) *G.Node {
		return G.NewMatrix(g, dt, G.WithShape(r, c), G.WithName(name))
	}
	f32, f64, bf := tensor.Float32, tensor.Float64, bfloat16.Dtype
	a, b := m(bf, "a", 3, 4), m(f32, "b", 4, 5)
	for _, c := range []struct {
		name string
		a, b *G.Node
		out  tensor.Dtype
		msg  string
	}{
		{"nil", nil, b, f32, "nil"},
		{"vector", G.NewVector(g, f32, G.WithShape(4), G.WithName("v")), b, f32, "matrices"},
		{"inner sizes", b, b, f32, "inner"},
		{"float64 mixed in", a, m(f64, "b64", 4, 5), f32, "float64 only throughout"},
		{"float64 output", a, b, f64, "float64 only throughout"},
		{"int", m(tensor.Int, "ai", 3, 4), b, f32, "want float32 or bfloat16"},
		{"other graph", G.NewMatrix(G.NewGraph(), bf, G.WithShape(3, 4), G.WithName("a2")), b, f32, "graph"},
	} {
		if _, err := MixedMatMul(c.a, c.b, c.out); err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: err = %v, want one about %q", c.name, err, c.msg)
		}
	}
}
