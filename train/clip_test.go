package train

import (
	"errors"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestClipGradNorm: the norm is sqrt of the sum of every squared gradient element (3-4-12
// gives 13), and gradients are scaled by maxNorm/(norm+1e-6) only when that is below 1.
func TestClipGradNorm(t *testing.T) {
	cases := []struct {
		name      string
		maxNorm   float64
		wantScale float64 // 1: unchanged
	}{
		{"clipped", 6.5, 0},
		{"at the norm (the 1e-6 still scales)", 13, 0},
		{"above", 13.0001, 1},
		{"far above", 100, 1},
	}
	for _, c := range cases {
		if c.wantScale == 0 {
			norm := 13.0 // a variable: Go evaluates constant expressions exactly
			c.wantScale = c.maxNorm / (norm + 1e-6)
		}
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype} {
			g1 := mkDense(dt, []float64{3, 0})
			g2 := mkDense(dt, []float64{-4, 12, 0})
			w1, w2 := mkDense(dt, []float64{0, 0}), mkDense(dt, []float64{0, 0, 0})
			norm, err := ClipGradNorm([]G.ValueGrad{vg{w1, g1}, vg{w2, g2}}, c.maxNorm)
			if err != nil {
				t.Fatalf("%s %v: %v", c.name, dt, err)
			}
			if norm != 13 {
				t.Errorf("%s %v: norm %v, want 13", c.name, dt, norm)
			}
			for i, want := range []float64{3, 0, -4, 12, 0} {
				got := asFloats(g1)
				got = append(got, asFloats(g2)...)
				w := want * c.wantScale
				// the scale is rounded to the dtype before the product, as on the GPU
				switch dt {
				case tensor.Float32:
					w = float64(float32(want) * float32(c.wantScale))
				case bfloat16.Dtype:
					w = float64(bfloat16.FromFloat32(float32(want) * float32(c.wantScale)).Float32())
				}
				if got[i] != w {
					t.Errorf("%s %v: g[%d] = %v, want %v", c.name, dt, i, got[i], w)
				}
			}
		}
	}
}

// TestClipGradNormWith: total gets each gradient's sum of squares in order (9 and 160) and
// its result is the squared norm: a total of 4·Σ gives norm 26 and scale 6.5/(26+1e-6); an
// error from total changes no gradient.
func TestClipGradNormWith(t *testing.T) {
	g1, g2 := dense64([]float64{3, 0}), dense64([]float64{-4, 12, 0})
	vgs := []G.ValueGrad{vg{dense64([]float64{0, 0}), g1}, vg{dense64([]float64{0, 0, 0}), g2}}
	var seen []float64
	norm, err := ClipGradNormWith(vgs, 6.5, func(sq []float64) (float64, error) {
		seen = append(seen, sq...)
		return 4 * (sq[0] + sq[1]), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || seen[0] != 9 || seen[1] != 160 {
		t.Errorf("total saw %v, want [9 160]", seen)
	}
	if norm != 26 {
		t.Errorf("norm %v, want 26", norm)
	}
	n := 26.0
	scale := 6.5 / (n + 1e-6)
	got := append(asFloats(g1), asFloats(g2)...)
	for i, want := range []float64{3, 0, -4, 12, 0} {
		if got[i] != want*scale {
			t.Errorf("g[%d] = %v, want %v", i, got[i], want*scale)
		}
	}
	before := append(asFloats(g1), asFloats(g2)...)
	if _, err := ClipGradNormWith(vgs, 1, func([]float64) (float64, error) { return 0, errors.New("ranks disagree") }); err == nil || !strings.Contains(err.Error(), "ranks disagree") {
		t.Errorf("total's error: %v", err)
	}
	after := append(asFloats(g1), asFloats(g2)...)
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("a failed total changed the gradients: %v -> %v", before, after)
		}
	}
}

// TestClipGradNormErrors: a NaN or infinite norm, or a bad maxNorm, is an error that leaves
// the gradients as they were.
func TestClipGradNormErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		g       []float64
		maxNorm float64
		want    string
	}{
		{"nan", []float64{1, math.NaN()}, 1, "gradient norm is NaN"},
		{"inf", []float64{math.Inf(-1), 1}, 1, "gradient norm is +Inf"},
		{"zero max", []float64{1, 2}, 0, "maxNorm 0"},
		{"negative max", []float64{1, 2}, -1, "maxNorm -1"},
	} {
		g := dense64(c.g)
		_, err := ClipGradNorm([]G.ValueGrad{vg{dense64([]float64{0, 0}), g}}, c.maxNorm)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
		if g.Float64s()[1] != c.g[1] && !math.IsNaN(c.g[1]) {
			t.Errorf("%s: gradient changed to %v", c.name, g.Float64s())
		}
	}
	a := NewAdam(0.1)
	a.MaxGradNorm = 1
	w := dense64([]float64{1, 2})
	if err := a.Step([]G.ValueGrad{vg{w, dense64([]float64{math.NaN(), 0})}}); err == nil || a.Steps() != 0 || w.Float64s()[0] != 1 {
		t.Errorf("Adam with a NaN gradient and clipping: err %v, steps %d, w %v", err, a.Steps(), w.Float64s())
	}
	a.MaxGradNorm = math.Inf(1)
	if err := a.Step([]G.ValueGrad{vg{w, dense64([]float64{1, 0})}}); err == nil || !strings.Contains(err.Error(), "MaxGradNorm") {
		t.Errorf("MaxGradNorm +Inf: %v", err)
	}
}

// TestClipSharedGradient: two weights whose gradient is one buffer (Gorgonia gives both
// inputs of an Add the same gradient) are clipped as the gradient of the cost wrt both: the
// norm counts the buffer once per weight, and the buffer is scaled once (it was scaled once
// per weight, so each weight moved by g·s² instead of g·s, 70 times too little here).
// Gradients that share memory only in part are refused.
func TestClipSharedGradient(t *testing.T) {
	g := G.NewGraph()
	v := func(n string, d ...float64) *G.Node {
		return G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName(n), G.WithValue(dense64(d)))
	}
	w1, w2, c := v("w1", 1, 2), v("w2", 3, 4), v("c", 30, 40)
	cost := G.Must(G.Sum(G.Must(G.HadamardProd(G.Must(G.Add(w1, w2)), c))))
	if _, err := G.Grad(cost, w1, w2); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	sgd := &SGD{LR: 1, MaxGradNorm: 1}
	if err := Step(vm, sgd, G.Nodes{w1, w2}, nil); err != nil {
		t.Fatal(err)
	}
	g1, _ := w1.Grad()
	g2, _ := w2.Grad()
	if g1.(*tensor.Dense).Uintptr() != g2.(*tensor.Dense).Uintptr() {
		t.Fatalf("the weights' gradients are two buffers: the test does not share one")
	}
	norm := math.Sqrt(2 * (30*30 + 40*40)) // (30, 40) once per weight
	s := 1 / (norm + 1e-6)
	if sgd.GradNorm() != norm {
		t.Errorf("norm %v, want %v", sgd.GradNorm(), norm)
	}
	for _, c := range []struct {
		w    *G.Node
		want []float64
	}{{w1, []float64{1 - 30*s, 2 - 40*s}}, {w2, []float64{3 - 30*s, 4 - 40*s}}} {
		if got := c.w.Value().Data().([]float64); got[0] != c.want[0] || got[1] != c.want[1] {
			t.Errorf("%s = %v, want %v", c.w.Name(), got, c.want)
		}
	}
	buf := []float64{1, 2, 3}
	part1 := tensor.New(tensor.WithShape(2), tensor.WithBacking(buf[:2]))
	part2 := tensor.New(tensor.WithShape(2), tensor.WithBacking(buf[1:]))
	_, err := ClipGradNorm([]G.ValueGrad{vg{dense64([]float64{0, 0}), part1}, vg{dense64([]float64{0, 0}), part2}}, 1)
	if err == nil || !strings.Contains(err.Error(), "the gradients of weight 0 and weight 1 share memory in part") {
		t.Errorf("gradients sharing memory in part: %v", err)
	}
	if buf[0] != 1 || buf[1] != 2 || buf[2] != 3 {
		t.Errorf("a refused clip changed the gradients to %v", buf)
	}
	// SharedGradients marks the second weight of the shared buffer, and refuses what the
	// optimisers refuse.
	shared, err := SharedGradients([]G.ValueGrad{w1, w2})
	if err != nil || len(shared) != 2 || shared[0] || !shared[1] {
		t.Errorf("SharedGradients(w1, w2) = %v, %v; want [false true]", shared, err)
	}
	other := vg{dense64([]float64{0, 0}), dense64([]float64{1, 1})}
	if shared, err := SharedGradients([]G.ValueGrad{other, w1}); err != nil || shared[0] || shared[1] {
		t.Errorf("SharedGradients of two buffers = %v, %v; want [false false]", shared, err)
	}
	for _, bad := range [][]G.ValueGrad{
		{w1, w1},
		{vg{dense64([]float64{0, 0}), part1}, vg{dense64([]float64{0, 0}), part2}},
	} {
		if _, err := SharedGradients(bad); err == nil {
			t.Errorf("SharedGradients(%v): no error", bad)
		}
	}
}

// TestOptimizersClip: Adam and SGD with MaxGradNorm give the update of the formula on the
// clipped gradient (refAdam, and SGD by hand), report the norm before clipping, and NaN
// without clipping.
func TestOptimizersClip(t *testing.T) {
	g0 := []float64{3, -4} // norm 5
	five := 5.0
	s := 1 / (five + 1e-6)
	clipped := []float64{3 * s, -4 * s}
	a := NewAdam(0.1)
	a.MaxGradNorm = 1
	w := dense64([]float64{1, 1})
	if err := a.Step([]G.ValueGrad{vg{w, dense64(g0)}}); err != nil {
		t.Fatal(err)
	}
	want := refAdam([]float64{1, 1}, [][]float64{clipped}, 0.1, 0.9, 0.999, 1e-8, 0)
	for i, x := range w.Float64s() {
		if !(math.Abs(x-want[i]) <= 1e-15) {
			t.Errorf("Adam w[%d] = %v, want %v", i, x, want[i])
		}
	}
	if a.GradNorm() != 5 {
		t.Errorf("Adam GradNorm %v, want 5", a.GradNorm())
	}
	sg := &SGD{LR: 0.5, MaxGradNorm: 2}
	w = dense64([]float64{1, 1})
	if err := sg.Step([]G.ValueGrad{vg{w, dense64(g0)}}); err != nil {
		t.Fatal(err)
	}
	s2 := 2 / (five + 1e-6)
	for i, x := range w.Float64s() {
		if want := 1 - 0.5*g0[i]*s2; math.Abs(x-want) > 1e-15 {
			t.Errorf("SGD w[%d] = %v, want %v", i, x, want)
		}
	}
	sg.MaxGradNorm = 0
	if err := sg.Step([]G.ValueGrad{vg{w, dense64(g0)}}); err != nil || !math.IsNaN(sg.GradNorm()) {
		t.Errorf("SGD without clipping: %v, GradNorm %v, want NaN", err, sg.GradNorm())
	}
}

func mkDense(dt tensor.Dtype, v []float64) *tensor.Dense {
	switch dt {
	case tensor.Float32:
		return dense32(v)
	case tensor.Float64:
		return dense64(v)
	}
	b := make([]bfloat16.BFloat16, len(v))
	for i, x := range v {
		b[i] = bfloat16.FromFloat32(float32(x))
	}
	return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(b))
}

func asFloats(d *tensor.Dense) []float64 {
	if d.Shape().IsScalar() {
		return scalarFloats(d)
	}
	if b, ok := d.Data().([]bfloat16.BFloat16); ok {
		o := make([]float64, len(b))
		for i, x := range b {
			o[i] = float64(x.Float32())
		}
		return o
	}
	return floats(d)
}

// scalarDense is v as a scalar-shaped tensor of dtype dt (whose Data() is the value, not a
// slice).
func scalarDense(dt tensor.Dtype, v float64) *tensor.Dense {
	switch dt {
	case tensor.Float32:
		return tensor.New(tensor.FromScalar(float32(v)))
	case tensor.Float64:
		return tensor.New(tensor.FromScalar(v))
	}
	return tensor.New(tensor.FromScalar(bfloat16.FromFloat32(float32(v))))
}

// TestClipAndStepScalarWeights: a scalar-shaped weight and gradient count in the norm, are
// clipped, and are updated by Adam and SGD, in every dtype (the host paths read tensors
// through their backing slices, not Data()).
func TestClipAndStepScalarWeights(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype} {
		ws, gs := scalarDense(dt, 0), scalarDense(dt, 12)
		if ws.Dtype() != dt || !ws.Shape().IsScalar() {
			t.Fatalf("%v: scalar tensor is %v %v", dt, ws.Dtype(), ws.Shape())
		}
		wv, gv := mkDense(dt, []float64{0, 0}), mkDense(dt, []float64{3, -4})
		norm, err := ClipGradNorm([]G.ValueGrad{vg{wv, gv}, vg{ws, gs}}, 6.5)
		if err != nil {
			t.Fatalf("%v: %v", dt, err)
		}
		if norm != 13 {
			t.Errorf("%v: norm %v, want 13 (the scalar gradient 12 counted)", dt, norm)
		}
		n := 13.0
		want := 12 * (6.5 / (n + 1e-6))
		if got := asFloats(gs); len(got) != 1 || math.Abs(got[0]-want) > 0.01*want {
			t.Errorf("%v: clipped scalar gradient %v, want about %v", dt, got, want)
		}
		for _, opt := range []interface{ Step([]G.ValueGrad) error }{&Adam{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, &SGD{LR: 0.1}} {
			w, g := scalarDense(dt, 1), scalarDense(dt, 2)
			if err := opt.Step([]G.ValueGrad{vg{w, g}}); err != nil {
				t.Fatalf("%v %T: %v", dt, opt, err)
			}
			if got := asFloats(w); len(got) != 1 || !(got[0] < 1) {
				t.Errorf("%v %T: scalar weight after a step with gradient 2: %v, want below 1", dt, opt, got)
			}
		}
	}
}

// scalarFloats is the one value of a scalar-shaped tensor, read through hostData (Data() of a
// bfloat16 scalar is its uint16 bits).
func scalarFloats(d *tensor.Dense) []float64 {
	switch x := hostData(d).(type) {
	case []float32:
		return []float64{float64(x[0])}
	case []float64:
		return []float64{x[0]}
	case []bfloat16.BFloat16:
		return []float64{float64(x[0].Float32())}
	}
	return nil
}
