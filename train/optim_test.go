package train

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
)

// vg is a ValueGrad made of two values.
type vg struct{ w, g G.Value }

func (p vg) Value() G.Value         { return p.w }
func (p vg) Grad() (G.Value, error) { return p.g, nil }

func dense64(v []float64) *tensor.Dense {
	return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(append([]float64(nil), v...)))
}

func dense32(v []float64) *tensor.Dense {
	b := make([]float32, len(v))
	for i, x := range v {
		b[i] = float32(x)
	}
	return tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(b))
}

func floats(d *tensor.Dense) []float64 {
	switch x := d.Data().(type) {
	case []float32:
		o := make([]float64, len(x))
		for i, v := range x {
			o[i] = float64(v)
		}
		return o
	}
	return append([]float64(nil), d.Float64s()...)
}

// refAdam is the textbook update in float64 over steps of gradients gs.
func refAdam(w []float64, gs [][]float64, lr, b1, b2, eps, wd float64) []float64 {
	w = append([]float64(nil), w...)
	m := make([]float64, len(w))
	v := make([]float64, len(w))
	for t, g := range gs {
		for i := range w {
			m[i] = b1*m[i] + (1-b1)*g[i]
			v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
			mh := m[i] / (1 - math.Pow(b1, float64(t+1)))
			vh := v[i] / (1 - math.Pow(b2, float64(t+1)))
			w[i] -= lr * (mh/(math.Sqrt(vh)+eps) + wd*w[i])
		}
	}
	return w
}

func TestAdamMatchesFormula(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	n := 37
	w0 := make([]float64, n)
	for i := range w0 {
		w0[i] = rng.NormFloat64()
	}
	gs := make([][]float64, 5)
	for s := range gs {
		gs[s] = make([]float64, n)
		for i := range gs[s] {
			gs[s][i] = rng.NormFloat64()
		}
	}
	for _, wd := range []float64{0, 0.01} {
		want := refAdam(w0, gs, 1e-2, 0.9, 0.999, 1e-8, wd)
		for _, f32 := range []bool{false, true} {
			mk, tol := dense64, 1e-13
			if f32 {
				mk, tol = dense32, 2e-6
			}
			w := mk(w0)
			a := NewAdam(1e-2)
			a.WeightDecay = wd
			for _, g := range gs {
				if err := a.Step([]G.ValueGrad{vg{w, mk(g)}}); err != nil {
					t.Fatal(err)
				}
			}
			got := floats(w)
			for i := range got {
				if d := math.Abs(got[i] - want[i]); !(d <= tol*(1+math.Abs(want[i]))) {
					t.Fatalf("wd=%g f32=%v: w[%d] = %v, want %v", wd, f32, i, got[i], want[i])
				}
			}
			if a.Steps() != len(gs) {
				t.Errorf("Steps() = %d", a.Steps())
			}
		}
	}
}

func TestSGDMatchesFormula(t *testing.T) {
	w := dense64([]float64{1, -2, 3})
	g := dense64([]float64{0.5, 0.25, -1})
	s := &SGD{LR: 0.1, WeightDecay: 0.2}
	if err := s.Step([]G.ValueGrad{vg{w, g}}); err != nil {
		t.Fatal(err)
	}
	want := []float64{1 - 0.1*(0.5+0.2*1), -2 - 0.1*(0.25+0.2*-2), 3 - 0.1*(-1+0.2*3)}
	for i, x := range w.Float64s() {
		if !(math.Abs(x-want[i]) <= 1e-15) {
			t.Errorf("w[%d] = %v, want %v", i, x, want[i])
		}
	}
}

// TestOptimizerBadInput: every bad input is an error that updates nothing.
func TestOptimizerBadInput(t *testing.T) {
	good := func() (*tensor.Dense, *tensor.Dense) { return dense64([]float64{1, 2}), dense64([]float64{3, 4}) }
	w, g := good()
	cases := []struct {
		name string
		vgs  func() []G.ValueGrad
		want string
	}{
		{"nil", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, nil} }, "is nil"},
		{"size", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, vg{dense64([]float64{1}), g}} }, "gradient is"},
		{"dtype", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, vg{dense32([]float64{1, 2}), g}} }, "gradient is"},
		{"int", func() []G.ValueGrad {
			i := tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{1, 2}))
			return []G.ValueGrad{vg{w, g}, vg{i, i}}
		}, "want float32, float64 or bfloat16"},
		{"twice", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, vg{w, g}} }, "appears twice"},
		{"scalar value", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, vg{G.NewF64(1), G.NewF64(1)}} }, "want *tensor.Dense"},
		{"nil dense", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, vg{(*tensor.Dense)(nil), g}} }, "want *tensor.Dense"},
		// Memory shared where an update would change what a later one reads: the first
		// weight used to be updated before the kernel refused the second.
		{"gradient is its weight", func() []G.ValueGrad {
			w2 := dense64([]float64{5, 6})
			return []G.ValueGrad{vg{w, g}, vg{w2, w2}}
		}, "the gradient of weight 1 shares memory with weight 1"},
		{"gradient is another weight", func() []G.ValueGrad { return []G.ValueGrad{vg{w, g}, vg{dense64([]float64{5, 6}), w}} }, "the gradient of weight 1 shares memory with weight 0"},
		{"gradient overlaps a weight", func() []G.ValueGrad {
			buf := []float64{5, 6, 7}
			w2 := tensor.New(tensor.WithShape(2), tensor.WithBacking(buf[:2]))
			return []G.ValueGrad{vg{w, g}, vg{w2, tensor.New(tensor.WithShape(2), tensor.WithBacking(buf[1:]))}}
		}, "the gradient of weight 1 shares memory with weight 1"},
		{"weights overlap", func() []G.ValueGrad {
			buf := []float64{5, 6, 7}
			w1 := tensor.New(tensor.WithShape(2), tensor.WithBacking(buf[1:]))
			w2 := tensor.New(tensor.WithShape(2), tensor.WithBacking(buf[:2]))
			return []G.ValueGrad{vg{w, g}, vg{w1, dense64([]float64{1, 1})}, vg{w2, dense64([]float64{1, 1})}}
		}, "weight 2 appears twice (as weight 1, or shares its memory)"},
	}
	for _, c := range cases {
		for _, s := range []G.Solver{NewAdam(0.1), &SGD{LR: 0.1}} {
			err := s.Step(c.vgs())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s %T: err %v, want one containing %q", c.name, s, err, c.want)
			}
			if w.Float64s()[0] != 1 || w.Float64s()[1] != 2 {
				t.Fatalf("%s %T: the weight changed to %v", c.name, s, w.Float64s())
			}
			if a, ok := s.(*Adam); ok && a.Steps() != 0 {
				t.Errorf("%s: Adam counted a failed step", c.name)
			}
		}
	}
	for _, s := range []G.Solver{&Adam{LR: 0.1, Beta1: 1, Beta2: 0.9, Eps: 1e-8}, &Adam{LR: math.NaN(), Beta1: 0.9, Beta2: 0.9, Eps: 1e-8},
		&Adam{LR: 0.1, Beta1: 0.9, Beta2: 0.9, Eps: math.Inf(1)}, &SGD{LR: -1}, &SGD{LR: 0.1, WeightDecay: math.Inf(1)}} {
		if err := s.Step([]G.ValueGrad{vg{w, g}}); err == nil {
			t.Errorf("%+v: no error", s)
		}
	}
	if w.Float64s()[0] != 1 {
		t.Fatalf("a refused step changed the weight")
	}
}

// TestOptimizerSettingsFitTheDtype: a setting that passes the checks of every dtype but that
// a float32 update (a float32 weight, or a bfloat16 weight's float32 master copy) rounds to
// +Inf or to 0 is an error naming the first such weight, before any weight changes; float64
// weights take it as it is. They used to make the weights NaN with no error: with a zero
// gradient and weight, Inf·0 (rate, weight decay) or 0/0 (eps).
func TestOptimizerSettingsFitTheDtype(t *testing.T) {
	adam := func(lr, eps, wd float64) *Adam {
		return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: eps, WeightDecay: wd}
	}
	weight := func(dt tensor.Dtype) *tensor.Dense {
		switch dt {
		case tensor.Float32:
			return dense32([]float64{0, 1})
		case bfloat16.Dtype:
			w := tensor.New(tensor.WithShape(2), tensor.Of(bfloat16.Dtype))
			bf16Data(w)[1] = bfloat16.FromFloat32(1)
			return w
		}
		return dense64([]float64{0, 1})
	}
	for _, c := range []struct {
		name string
		s    G.Solver
		dt   tensor.Dtype // of weight 1 (weight 0 is float64)
		want string       // "": the step runs
	}{
		{"Adam eps 1e-50, float32", adam(0.1, 1e-50, 0), tensor.Float32, "gomoe: train: Adam: eps 1e-50 rounds to 0 in the float32 update of weight 1 (the step of a zero moment would be 0/0 = NaN)"},
		{"Adam eps 1e-50, bfloat16", adam(0.1, 1e-50, 0), bfloat16.Dtype, "gomoe: train: Adam: eps 1e-50 rounds to 0 in the float32 update of weight 1"},
		{"Adam eps 1e39, float32", adam(0.1, 1e39, 0), tensor.Float32, "gomoe: train: Adam: eps 1e+39 does not fit the float32 update of weight 1 (at most 3.4028234663852886e+38)"},
		{"Adam rate 1e39, float32", adam(1e39, 1e-8, 0), tensor.Float32, "gomoe: train: Adam: learning rate 1e+39 does not fit the float32 update of weight 1 (at most 3.4028234663852886e+38)"},
		{"Adam weight decay 1e39, bfloat16", adam(0.1, 1e-8, 1e39), bfloat16.Dtype, "gomoe: train: Adam: weight decay 1e+39 does not fit the float32 update of weight 1 (at most 3.4028234663852886e+38)"},
		{"Adam rate 1e-50, float32", adam(1e-50, 1e-8, 0), tensor.Float32, "gomoe: train: Adam: learning rate 1e-50 rounds to 0 in the float32 update of weight 1 (the weights would not move)"},
		{"SGD rate 1e39, float32", &SGD{LR: 1e39}, tensor.Float32, "gomoe: train: SGD: learning rate 1e+39 does not fit the float32 update of weight 1 (at most 3.4028234663852886e+38)"},
		{"SGD rate 1e39, bfloat16", &SGD{LR: 1e39}, bfloat16.Dtype, "gomoe: train: SGD: learning rate 1e+39 does not fit the float32 update of weight 1"},
		{"SGD weight decay 1e39, float32", &SGD{LR: 0.1, WeightDecay: 1e39}, tensor.Float32, "gomoe: train: SGD: weight decay 1e+39 does not fit the float32 update of weight 1"},
		{"SGD weight decay 1e-50, float32", &SGD{LR: 0.1, WeightDecay: 1e-50}, tensor.Float32, "gomoe: train: SGD: weight decay 1e-50 rounds to 0 in the float32 update of weight 1 (the weights would not decay)"},
		// Float64 weights take the settings as they are; so do float32 ones that fit.
		{"Adam eps 1e-50, float64", adam(0.1, 1e-50, 0), tensor.Float64, ""},
		{"Adam rate 1e39, float64", adam(1e39, 1e-8, 1e39), tensor.Float64, ""},
		{"SGD rate 1e39, float64", &SGD{LR: 1e39, WeightDecay: 1e-50}, tensor.Float64, ""},
		{"Adam at the float32 limits", adam(math.MaxFloat32, math.SmallestNonzeroFloat32, 0), tensor.Float32, ""},
		{"SGD rate 0", &SGD{LR: 0}, tensor.Float32, ""},
	} {
		w0, w1 := dense64([]float64{0, 1}), weight(c.dt)
		vgs := []G.ValueGrad{vg{w0, dense64([]float64{0, 0})}, vg{w1, tensor.New(tensor.WithShape(2), tensor.Of(c.dt))}}
		before := fmt.Sprint(w1.Data())
		err := c.s.Step(vgs)
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			for _, w := range []*tensor.Dense{w0, w1} {
				if s := fmt.Sprint(w.Data()); strings.Contains(s, "NaN") {
					t.Errorf("%s: the weight became %s", c.name, s)
				}
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
		if after := fmt.Sprint(w1.Data()); after != before || w0.Float64s()[0] != 0 || w0.Float64s()[1] != 1 {
			t.Errorf("%s: a refused step changed the weights to %v, %s", c.name, w0.Float64s(), after)
		}
		if a, ok := c.s.(*Adam); ok && (a.Steps() != 0 || a.state != nil) {
			t.Errorf("%s: Adam counted the refused step or made state", c.name)
		}
	}
}

// TestOptimizerStateBeyondMemory: state that cannot fit in the memory this process may use is
// an error before any is made (a failed allocation is fatal): Adam's two moments of each
// weight, and a bfloat16 weight's float32 master copy under SGD. No weight changes.
func TestOptimizerStateBeyondMemory(t *testing.T) {
	// A zero weight of n elements and a gradient of ones.
	f64 := func() []G.ValueGrad {
		g := dense64(make([]float64, 1000))
		for i := range g.Float64s() {
			g.Float64s()[i] = 1
		}
		return []G.ValueGrad{vg{dense64(make([]float64, 1000)), g}}
	}
	bf16 := func() []G.ValueGrad {
		g := tensor.New(tensor.WithShape(1000), tensor.Of(bfloat16.Dtype))
		if err := bfloat16.FromFloat32s(bf16Data(g), slices.Repeat([]float32{1}, 1000)); err != nil {
			t.Fatal(err)
		}
		return []G.ValueGrad{vg{tensor.New(tensor.WithShape(1000), tensor.Of(bfloat16.Dtype)), g}}
	}
	for _, c := range []struct {
		name  string
		s     G.Solver
		vgs   []G.ValueGrad
		limit uint64 // just below the state's bytes
		want  string
	}{
		{"Adam, float64", NewAdam(0.1), f64(), 16000 - 1, "state (moments and float32 master copies) need 1.6e+04 bytes"},
		{"Adam, bfloat16", NewAdam(0.1), bf16(), 12000 - 1, "need 1.2e+04 bytes"},
		{"SGD, bfloat16", &SGD{LR: 0.1}, bf16(), 4000 - 1, "need 4000 bytes"},
	} {
		w := c.vgs[0].(vg).w
		prev := hostmem.SetLimit(c.limit)
		err := c.s.Step(c.vgs)
		hostmem.SetLimit(prev)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.name, err, c.want)
		}
		if a, ok := c.s.(*Adam); ok && a.Steps() != 0 {
			t.Errorf("%s: Adam counted a failed step", c.name)
		}
		if !isZero(w) {
			t.Fatalf("%s: a refused step changed the weight", c.name)
		}
		if err := c.s.Step(c.vgs); err != nil || isZero(w) { // the same step within the machine's memory
			t.Errorf("%s: the step within the memory: %v (weight still zero: %v)", c.name, err, isZero(w))
		}
	}
}

// isZero reports whether every element of a float64 or bfloat16 weight is +0.
func isZero(w G.Value) bool {
	d := w.(*tensor.Dense)
	if d.Dtype() == bfloat16.Dtype {
		return !slices.ContainsFunc(bf16Data(d), func(x bfloat16.BFloat16) bool { return x != 0 })
	}
	return !slices.ContainsFunc(d.Float64s(), func(x float64) bool { return x != 0 })
}

// TestStepTrainsLeastSquares: Step with Adam fits y = x·w on the host; the loss falls and
// the weights approach the true ones.
func TestStepTrainsLeastSquares(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	const n, d = 32, 3
	wTrue := []float64{1.5, -2, 0.5}
	xs := make([]float64, n*d)
	ys := make([]float64, n)
	for i := 0; i < n; i++ {
		for j := 0; j < d; j++ {
			xs[i*d+j] = rng.NormFloat64()
			ys[i] += xs[i*d+j] * wTrue[j]
		}
	}
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(n, d), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(n, d), tensor.WithBacking(xs))))
	y := G.NewMatrix(g, tensor.Float64, G.WithShape(n, 1), G.WithName("y"), G.WithValue(tensor.New(tensor.WithShape(n, 1), tensor.WithBacking(ys))))
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(d, 1), G.WithName("w"), G.WithInit(G.Zeroes()))
	pred := G.Must(G.Mul(x, w))
	loss := G.Must(G.Mean(G.Must(G.Square(G.Must(G.Sub(pred, y))))))
	if _, err := G.Grad(loss, w); err != nil {
		t.Fatal(err)
	}
	var lv G.Value
	G.Read(loss, &lv)
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	opt := NewAdam(0.1)
	var first, last float64
	for s := 0; s < 300; s++ {
		err := Step(vm, opt, G.Nodes{w}, func() error {
			v, err := Scalar(lv)
			if s == 0 {
				first = v
			}
			last = v
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if !(last < first/100) {
		t.Errorf("loss %g → %g, want a fall by 100x", first, last)
	}
	for j, v := range w.Value().Data().([]float64) {
		if !(math.Abs(v-wTrue[j]) <= 0.05) {
			t.Errorf("w[%d] = %v, want about %v", j, v, wTrue[j])
		}
	}
}

// TestStepReadPrediction: a prediction read in Step's after through G.Read, as the Step doc
// says, holds p = a·b, computed by hand, on every step. Without the read its Value does not:
// the tape machine reuses p's buffer in the backward pass (Gorgonia v0.9.18), which is why the
// doc asks for G.Read.
func TestStepReadPrediction(t *testing.T) {
	for _, read := range []bool{true, false} {
		g := G.NewGraph()
		a := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 3), G.WithName("a"),
			G.WithValue(tensor.New(tensor.WithShape(4, 3), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}))))
		b := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 1), G.WithName("b"),
			G.WithValue(tensor.New(tensor.WithShape(3, 1), tensor.WithBacking([]float64{1, 1, 1}))))
		y := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 1), G.WithName("y"),
			G.WithValue(tensor.New(tensor.WithShape(4, 1), tensor.WithBacking([]float64{0, 0, 0, 0}))))
		p := G.Must(G.Mul(a, b))
		cost := G.Must(G.Mean(G.Must(G.Square(G.Must(G.Sub(p, y))))))
		if _, err := G.Grad(cost, b); err != nil {
			t.Fatal(err)
		}
		var pv G.Value
		if read {
			G.Read(p, &pv)
		}
		vm := G.NewTapeMachine(g)
		for step := 0; step < 3; step++ {
			bw := append([]float64(nil), b.Value().Data().([]float64)...)
			var wrong int
			err := Step(vm, &SGD{LR: 1e-3}, G.Nodes{b}, func() error {
				got := p.Value().Data().([]float64)
				if read {
					got = pv.Data().([]float64)
				}
				for i := 0; i < 4; i++ {
					want := 0.0
					for j := 0; j < 3; j++ {
						want += float64(3*i+j+1) * bw[j]
					}
					if got[i] != want {
						wrong++
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if read && wrong > 0 {
				t.Errorf("step %d: %d of p's 4 values read through G.Read are not a·b", step, wrong)
			}
			if !read && wrong == 0 {
				t.Errorf("step %d: p's Value held a·b without G.Read: the Step doc's warning is out of date", step)
			}
		}
		vm.Close()
	}
}

// squaresGraph is cost = Σ w², w = [1 2], with the gradient nodes.
func squaresGraph(t *testing.T) (g *G.ExprGraph, w, cost *G.Node) {
	t.Helper()
	g = G.NewGraph()
	w = G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("w"), G.WithValue(dense64([]float64{1, 2})))
	cost = G.Must(G.Sum(G.Must(G.Square(w))))
	if _, err := G.Grad(cost, w); err != nil {
		t.Fatal(err)
	}
	return g, w, cost
}

// TestStepGradientNotRun: a machine made on roots that leave out the gradient nodes runs the
// forward only; Step says so instead of naming a nil gradient's type.
func TestStepGradientNotRun(t *testing.T) {
	g, w, cost := squaresGraph(t)
	vm := G.NewTapeMachine(g.SubgraphRoots(cost))
	defer vm.Close()
	err := Step(vm, NewAdam(0.1), G.Nodes{w}, nil)
	if err == nil || !strings.Contains(err.Error(), "did its gradient node run?") {
		t.Errorf("Step without the gradient nodes: %v, want an error asking whether the gradient node ran", err)
	}
	if v := w.Value().Data().([]float64); v[0] != 1 || v[1] != 2 {
		t.Errorf("the weight changed to %v", v)
	}
}

// TestStepMissingValues: Step with a nil param, and Scalar of a nil or empty value, return an
// error and do not panic; the weights stay as they were.
func TestStepMissingValues(t *testing.T) {
	g, w, _ := squaresGraph(t)
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	for _, params := range []G.Nodes{{nil, w}, {w, nil}} {
		err := noPanic(func() error { return Step(vm, NewAdam(0.1), params, nil) })
		if err == nil || !strings.Contains(err.Error(), "is nil") {
			t.Errorf("Step with params %v: %v, want an error naming the nil weight", params, err)
		}
		if v := w.Value().Data().([]float64); v[0] != 1 || v[1] != 2 {
			t.Fatalf("the weight changed to %v", v)
		}
	}
	for _, c := range []struct {
		name string
		v    G.Value
		want string
	}{
		{"nil", nil, "Scalar of a value that is nil"},
		{"nil *tensor.Dense", (*tensor.Dense)(nil), "Scalar of a value that is nil"},
		{"empty *tensor.Dense", new(tensor.Dense), "Scalar of a value that is an empty *tensor.Dense"},
	} {
		err := noPanic(func() error { _, err := Scalar(c.v); return err })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Scalar of %s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestAdamBFloat16MasterWeights: a bfloat16 weight follows the float32 Adam of its master
// copy (made from the weight) and is that master rounded, step after step; tiny updates that
// would vanish in bfloat16 accumulate in the master.
func TestAdamBFloat16MasterWeights(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	n := 64
	w0 := make([]float32, n)
	for i := range w0 {
		w0[i] = bfloat16.FromFloat32(float32(rng.NormFloat64())).Float32()
	}
	wb := make([]bfloat16.BFloat16, n)
	if err := bfloat16.FromFloat32s(wb, w0); err != nil {
		t.Fatal(err)
	}
	w := tensor.New(tensor.WithShape(n), tensor.WithBacking(wb))
	w32 := tensor.New(tensor.WithShape(n), tensor.WithBacking(append([]float32(nil), w0...)))
	ab, a32 := NewAdam(1e-4), NewAdam(1e-4)
	for s := 0; s < 20; s++ {
		gb := make([]bfloat16.BFloat16, n)
		g32 := make([]float32, n)
		for i := range gb {
			gb[i] = bfloat16.FromFloat32(float32(rng.NormFloat64()))
			g32[i] = gb[i].Float32()
		}
		if err := ab.Step([]G.ValueGrad{vg{w, tensor.New(tensor.WithShape(n), tensor.WithBacking(gb))}}); err != nil {
			t.Fatal(err)
		}
		if err := a32.Step([]G.ValueGrad{vg{w32, tensor.New(tensor.WithShape(n), tensor.WithBacking(g32))}}); err != nil {
			t.Fatal(err)
		}
		for i, x := range w32.Float32s() {
			if want := bfloat16.FromFloat32(x); wb[i] != want {
				t.Fatalf("step %d: w[%d] = %v, want the float32 master %v rounded (%v)", s, i, wb[i], x, want)
			}
		}
	}
	moved := 0
	for i, x := range w32.Float32s() {
		if x != w0[i] {
			moved++
		}
	}
	if moved != n {
		t.Errorf("only %d of %d master weights moved", moved, n)
	}
}

// TestStateOfAFreedWeight: the optimisers keep a weight's state under the address of its
// data. A weight that takes the memory of one the program dropped (a node rebound with
// G.Let, a model rebuilt) starts from fresh state: it used to inherit the dropped weight's
// Adam moments, or its float32 master copy under SGD (the new bfloat16 weight then became
// the old weight's master, rounded), whenever the garbage collector gave it the same address.
func TestStateOfAFreedWeight(t *testing.T) {
	const n = 8
	bf := func(v float32) *tensor.Dense {
		b := make([]bfloat16.BFloat16, n)
		for i := range b {
			b[i] = bfloat16.FromFloat32(v)
		}
		return tensor.New(tensor.WithShape(n), tensor.WithBacking(b))
	}
	f64 := func(v float64) *tensor.Dense {
		b := make([]float64, n)
		for i := range b {
			b[i] = v
		}
		return tensor.New(tensor.WithShape(n), tensor.WithBacking(b))
	}
	tests := []struct {
		name string
		opt  func() G.Solver
		// fresh is the optimiser a new weight should step like: same settings and step count
		// as opt, no state.
		fresh  func(opt G.Solver) G.Solver
		w, g   func(step int) *tensor.Dense // the weight and gradient of each step's new weight
		values func(d *tensor.Dense) []float64
	}{
		{"Adam float64",
			func() G.Solver { return NewAdam(0.1) },
			func(opt G.Solver) G.Solver { a := NewAdam(0.1); a.t = opt.(*Adam).t; return a },
			func(int) *tensor.Dense { return f64(1) },
			func(step int) *tensor.Dense { return f64(float64(1-2*(step%2)) * 100) },
			floats},
		{"SGD bfloat16",
			func() G.Solver { return &SGD{LR: 0.5} },
			func(G.Solver) G.Solver { return &SGD{LR: 0.5} },
			func(step int) *tensor.Dense { return bf(float32(step)) },
			func(int) *tensor.Dense { return bf(1) },
			func(d *tensor.Dense) []float64 {
				out := make([]float64, n)
				for i, x := range d.Data().([]bfloat16.BFloat16) {
					out[i] = float64(x.Float32())
				}
				return out
			}},
	}
	for _, tt := range tests {
		opt := tt.opt()
		for step := 0; step < 100; step++ {
			w, g := tt.w(step), tt.g(step)
			want := w.Clone().(*tensor.Dense)
			if err := tt.fresh(opt).Step([]G.ValueGrad{vg{want, g.Clone().(*tensor.Dense)}}); err != nil {
				t.Fatal(err)
			}
			if err := opt.Step([]G.ValueGrad{vg{w, g}}); err != nil {
				t.Fatal(err)
			}
			if got, exp := tt.values(w), tt.values(want); fmt.Sprint(got) != fmt.Sprint(exp) {
				t.Fatalf("%s: step %d: a new weight became %v, want %v (the step of fresh state)", tt.name, step, got, exp)
			}
			w, g = nil, nil
			runtime.GC() // frees this step's weight: the next one may take its address
		}
	}
}

// TestStepRefusesEmptyValues: an empty *tensor.Dense (no dtype, no data) or a value with no
// elements, as a weight or a gradient, is an error that says so, from Adam, SGD, ClipGradNorm
// and SharedGradients. The empty Dense used to panic (a nil array), the zero-size one was
// called "a non-contiguous view".
func TestStepRefusesEmptyValues(t *testing.T) {
	good := func() *tensor.Dense { return dense32([]float64{1, 2}) }
	zero := func() *tensor.Dense { return tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(0)) }
	for _, c := range []struct {
		name string
		w, g *tensor.Dense
		want string
	}{
		{"empty weight and gradient", new(tensor.Dense), new(tensor.Dense), "weight 0 is an empty *tensor.Dense"},
		{"empty gradient", good(), new(tensor.Dense), "the gradient of weight 0 is an empty *tensor.Dense"},
		{"no elements", zero(), zero(), "want values with elements"},
	} {
		vgs := []G.ValueGrad{vg{c.w, c.g}}
		for _, f := range []struct {
			name string
			f    func() error
		}{
			{"Adam", func() error { return NewAdam(0.1).Step(vgs) }},
			{"SGD", func() error { return (&SGD{LR: 0.1}).Step(vgs) }},
			{"ClipGradNorm", func() error { _, err := ClipGradNorm(vgs, 1); return err }},
			{"SharedGradients", func() error { _, err := SharedGradients(vgs); return err }},
		} {
			err := noPanic(f.f)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s, %s: %v, want an error containing %q", c.name, f.name, err, c.want)
			}
		}
	}
}

// TestFailedStepChangesNoState: a step that fails on its gradient norm (infinite or NaN)
// leaves GradNorm at the last update's norm and makes no optimiser state for a weight it has
// not stepped. GradNorm used to read the failed step's norm, and the new weight's state was
// made before the clip failed.
func TestFailedStepChangesNoState(t *testing.T) {
	a := NewAdam(0.1)
	a.MaxGradNorm = 1
	w := dense32([]float64{1, 2})
	if err := a.Step([]G.ValueGrad{vg{w, dense32([]float64{3, 4})}}); err != nil {
		t.Fatal(err)
	}
	w2 := dense32([]float64{5})
	if a.Step([]G.ValueGrad{vg{w, dense32([]float64{math.Inf(1), 4})}, vg{w2, dense32([]float64{1})}}) == nil {
		t.Fatal("no error for an infinite norm")
	}
	if got := a.GradNorm(); got != 5 {
		t.Errorf("Adam.GradNorm after a failed step = %v, want the last update's 5", got)
	}
	if _, ok := a.state[w2.Uintptr()]; ok || len(a.state) != 1 {
		t.Errorf("a failed step made state for a new weight (%d weights have state, want 1)", len(a.state))
	}
	s := &SGD{LR: 0.1, MaxGradNorm: 1}
	if err := s.Step([]G.ValueGrad{vg{w, dense32([]float64{3, 4})}}); err != nil {
		t.Fatal(err)
	}
	if s.Step([]G.ValueGrad{vg{w, dense32([]float64{math.NaN(), 4})}}) == nil {
		t.Fatal("no error for a NaN norm")
	}
	if got := s.GradNorm(); got != 5 {
		t.Errorf("SGD.GradNorm after a failed step = %v, want 5", got)
	}
}

// noPanic calls f and returns its error, or the panic it raised as an error.
func noPanic(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	return f()
}
