package op

import (
	"math"
	"math/rand"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/reftest"
)

// TestCastGradients: cost = Σ W ⊙ cast(cast(x)²) has gradient 2·W⊙x. A central difference
// cannot check it (the float32 leg rounds the perturbation away), so the closed form is the
// reference, with a float32-rounding tolerance.
func TestCastGradients(t *testing.T) {
	rng := rand.New(rand.NewSource(13))
	xd, wd := gcRand(rng, 12), gcRand(rng, 12)
	want := make([]float64, 12)
	for i := range want {
		want[i] = 2 * wd[i] * xd[i]
	}
	build := func(g *G.ExprGraph, dt tensor.Dtype) (*G.Node, *G.Node) {
		other := tensor.Float32
		if dt == tensor.Float32 {
			other = tensor.Float64
		}
		x := G.NewMatrix(g, dt, G.WithShape(3, 4), G.WithName("x"), G.WithValue(gcDense(dt, tensor.Shape{3, 4}, xd)))
		w := G.NewMatrix(g, dt, G.WithShape(3, 4), G.WithName("w"), G.WithValue(gcDense(dt, tensor.Shape{3, 4}, wd)))
		a, err := Cast(x, other)
		if err != nil {
			t.Fatal(err)
		}
		b, err := Cast(G.Must(G.Square(a)), dt)
		if err != nil {
			t.Fatal(err)
		}
		return x, G.Must(G.Sum(G.Must(G.HadamardProd(b, w))))
	}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		sym, do := tapeAndLispGrads(t, func(g *G.ExprGraph) (*G.Node, *G.Node) { return build(g, dt) })
		if d := reftest.MaxDiff(gcFloats(sym), want); d > 1e-5 {
			t.Errorf("%v SymDiff: max diff %g", dt, d)
		}
		if d := reftest.MaxDiff(gcFloats(do), want); d > 1e-5 {
			t.Errorf("%v DoDiff: max diff %g", dt, d)
		}
	}
}

// tapeAndLispGrads returns the gradient of cost wrt x of the graph build makes, on the tape
// machine (G.Grad: the ops' SymDiff) and on the lisp machine (their DoDiff), each on a graph
// of its own.
func tapeAndLispGrads(t *testing.T, build func(g *G.ExprGraph) (x, cost *G.Node)) (symDiff, doDiff G.Value) {
	t.Helper()
	g := G.NewGraph()
	x, cost := build(g)
	grads, err := G.Grad(cost, x)
	if err != nil {
		t.Fatal(err)
	}
	G.Read(grads[0], &symDiff)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	h := G.NewGraph()
	x2, _ := build(h)
	lm := G.NewLispMachine(h)
	defer lm.Close()
	if err := lm.RunAll(); err != nil {
		t.Fatal(err)
	}
	if doDiff, err = x2.Grad(); err != nil {
		t.Fatal(err)
	}
	return symDiff, doDiff
}

func TestCastValuesAndErrors(t *testing.T) {
	g := G.NewGraph()
	x := G.NewVector(g, tensor.Float64, G.WithShape(3), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{1.5, 1.0 / 3, -2}))))
	same, err := Cast(x, tensor.Float64)
	if err != nil || same != x {
		t.Fatalf("same-dtype cast: %v, %v", same, err)
	}
	c, err := Cast(x, tensor.Float32)
	if err != nil {
		t.Fatal(err)
	}
	s, err := G.Sum(x)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := Cast(s, tensor.Float32) // scalar cast
	if err != nil {
		t.Fatal(err)
	}
	var cv, csv G.Value
	G.Read(c, &cv)
	G.Read(cs, &csv)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		t.Fatal(err)
	}
	got := cv.Data().([]float32)
	for i, want := range []float32{1.5, float32(1.0 / 3), -2} {
		if got[i] != want {
			t.Errorf("cast[%d] = %v, want %v", i, got[i], want)
		}
	}
	if v := csv.Data().(float32); math.Abs(float64(v)-(1.5+1.0/3-2)) > 1e-6 {
		t.Errorf("scalar cast %v", v)
	}
	if _, err := Cast(x, tensor.Int); err == nil {
		t.Error("cast to int: no error")
	}
	i := G.NewVector(g, tensor.Int32, G.WithShape(3), G.WithName("i"))
	if _, err := Cast(i, tensor.Float32); err == nil {
		t.Error("cast from int32: no error")
	}
	// A scalar has no bfloat16 value in Gorgonia: refused when the node is built (its Do gave
	// a float64 value, unrounded, for a node of dtype bfloat16).
	s32 := G.NewScalar(g, tensor.Float32, G.WithName("s32"), G.WithValue(float32(1.0001)))
	if _, err := Cast(s32, bfloat16.Dtype); err == nil || !strings.Contains(err.Error(), "scalar") {
		t.Errorf("scalar float32 to bfloat16: error %v, want a scalar error", err)
	}
	s16 := G.NewScalar(g, bfloat16.Dtype, G.WithName("s16"))
	if _, err := Cast(s16, tensor.Float32); err == nil || !strings.Contains(err.Error(), "scalar") {
		t.Errorf("scalar bfloat16 to float32: error %v, want a scalar error", err)
	}
	if _, err := (castOp{from: tensor.Float32, to: bfloat16.Dtype}).Do(G.NewF32(1)); err == nil {
		t.Error("castOp.Do of a scalar to bfloat16: no error")
	}
}

// TestCastBFloat16: float32 ↔ bfloat16 round to nearest even and back exactly; bfloat16 ↔
// float64 is refused.
func TestCastBFloat16(t *testing.T) {
	g := G.NewGraph()
	vals := []float32{1, 1.00390625, 1.01171875, -3.14159, 65504, 1e-20}
	x := G.NewVector(g, tensor.Float32, G.WithShape(len(vals)), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(len(vals)), tensor.WithBacking(append([]float32(nil), vals...)))))
	b := must(Cast(x, bfloat16.Dtype))
	back := must(Cast(b, tensor.Float32))
	out := runRead(t, g, b, back)
	got := out[0].Data().([]bfloat16.BFloat16)
	for i, v := range vals {
		if want := bfloat16.FromFloat32(v); got[i] != want {
			t.Errorf("bf16(%v) = %v, want %v", v, got[i], want)
		}
		if w := out[1].Data().([]float32)[i]; w != got[i].Float32() {
			t.Errorf("f32(bf16(%v)) = %v, want %v", v, w, got[i].Float32())
		}
	}
	x64 := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("x64"))
	if _, err := Cast(x64, bfloat16.Dtype); err == nil {
		t.Error("float64 to bfloat16: no error")
	}
	if _, err := Cast(b, tensor.Float64); err == nil {
		t.Error("bfloat16 to float64: no error")
	}
}

// TestCastBFloat16Gradients: the gradient of Σ w ⊙ cast(x)² for a bfloat16 x cast to float32
// is 2·w⊙x in bfloat16, on the tape machine (SymDiff) and the lisp machine (DoDiff, which
// used to read the bfloat16 gradient's bytes as float64: 15 elements are 30 bytes, 3 float64s,
// so the last 3 stayed 0). The values make every product exact in bfloat16.
func TestCastBFloat16Gradients(t *testing.T) {
	xs, ws := make([]float64, 15), make([]float32, 15)
	want := make([]float32, 15)
	for i := range xs {
		xs[i], ws[i] = float64(i+1), float32(15-i)
		want[i] = 2 * ws[i] * float32(xs[i])
	}
	build := func(g *G.ExprGraph) (*G.Node, *G.Node) {
		xb := make([]bfloat16.BFloat16, len(xs))
		for i, v := range xs {
			xb[i] = bfloat16.FromFloat32(float32(v))
		}
		x := G.NewMatrix(g, bfloat16.Dtype, G.WithShape(3, 5), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(3, 5), tensor.WithBacking(xb))))
		w := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 5), G.WithName("w"), G.WithValue(tensor.New(tensor.WithShape(3, 5), tensor.WithBacking(ws))))
		a, err := Cast(x, tensor.Float32)
		if err != nil {
			t.Fatal(err)
		}
		return x, G.Must(G.Sum(G.Must(G.HadamardProd(G.Must(G.Square(a)), w))))
	}
	check := func(how string, v G.Value) {
		got := v.Data().([]bfloat16.BFloat16)
		for i := range want {
			if got[i].Float32() != want[i] {
				t.Errorf("%s: dx = %v, want %v", how, got, want)
				return
			}
		}
	}
	sym, do := tapeAndLispGrads(t, build)
	check("SymDiff", sym)
	check("DoDiff", do)
}
