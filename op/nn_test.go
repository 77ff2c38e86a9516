package op

import (
	"math"
	"math/rand"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// BiasAdd, ReLU, RMSNorm and CrossEntropy: forward values against plain-loop references,
// float64 central-difference gradient checks (gcRun) and bad input.

// nnRef* are the references, written out independently of the kernels.
func nnRefBias(x, b []float64, cols int) []float64 {
	y := make([]float64, len(x))
	for i := range x {
		y[i] = x[i] + b[i%cols]
	}
	return y
}

func nnRefReLU(x []float64) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = math.Max(v, 0)
	}
	return y
}

func nnRefRMS(x, g []float64, eps float64) []float64 {
	cols := len(g)
	y := make([]float64, len(x))
	for r := 0; r < len(x)/cols; r++ {
		ms := 0.0
		for j := 0; j < cols; j++ {
			ms += x[r*cols+j] * x[r*cols+j] / float64(cols)
		}
		for j := 0; j < cols; j++ {
			y[r*cols+j] = x[r*cols+j] / math.Sqrt(ms+eps) * g[j]
		}
	}
	return y
}

func nnRefCE(x []float64, class []int, cols int) float64 {
	var total float64
	for r, c := range class {
		row := x[r*cols : (r+1)*cols]
		var s float64
		for _, v := range row {
			s += math.Exp(v)
		}
		total += -math.Log(math.Exp(row[c]) / s)
	}
	return total / float64(len(class))
}

func oneHot(class []int, cols int) []float64 {
	t := make([]float64, len(class)*cols)
	for r, c := range class {
		t[r*cols+c] = 1
	}
	return t
}

func TestNNOpsForward(t *testing.T) {
	const N, D, eps = 4, 5, 1e-5
	rng := rand.New(rand.NewSource(1))
	xs, bs := gcRand(rng, N*D), gcRand(rng, D)
	class := []int{0, 4, 2, 2}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		tol := 1e-12
		if dt == tensor.Float32 {
			tol = 1e-5
		}
		g := G.NewGraph()
		x := G.NewMatrix(g, dt, G.WithShape(N, D), G.WithName("x"), G.WithValue(gcDense(dt, tensor.Shape{N, D}, xs)))
		b := G.NewVector(g, dt, G.WithShape(D), G.WithName("b"), G.WithValue(gcDense(dt, tensor.Shape{D}, bs)))
		tg := G.NewMatrix(g, dt, G.WithShape(N, D), G.WithName("t"), G.WithValue(gcDense(dt, tensor.Shape{N, D}, oneHot(class, D))))
		ya, err := BiasAdd(x, b)
		if err != nil {
			t.Fatal(err)
		}
		yr, err := ReLU(x)
		if err != nil {
			t.Fatal(err)
		}
		yn, err := RMSNorm(x, b, eps)
		if err != nil {
			t.Fatal(err)
		}
		ce, err := CrossEntropy(x, tg)
		if err != nil {
			t.Fatal(err)
		}
		if !ce.IsScalar() {
			t.Fatalf("CrossEntropy node has shape %v, want a scalar", ce.Shape())
		}
		v := runRead(t, g, ya, yr, yn, ce)
		for i, want := range [][]float64{nnRefBias(xs, bs, D), nnRefReLU(xs), nnRefRMS(xs, bs, eps), {nnRefCE(xs, class, D)}} {
			if d := reftest.MaxDiff(gcFloats(v[i]), want); d > tol*10 {
				t.Errorf("%v output %d: max diff %g from the reference", dt, i, d)
			}
		}
	}
}

// nnCases are the gradient-check cases of the nn ops.
func nnCases() []gcCase {
	rng := rand.New(rand.NewSource(7))
	const N, D = 3, 5
	away := func(v []float64) []float64 { // keep ReLU inputs away from the kink
		for i := range v {
			if math.Abs(v[i]) < 0.05 {
				v[i] += 0.1
			}
		}
		return v
	}
	target := func(g *G.ExprGraph, dt tensor.Dtype, name string, class []int, cols int) *G.Node {
		return G.NewMatrix(g, dt, G.WithShape(len(class), cols), G.WithName(name),
			G.WithValue(gcDense(dt, tensor.Shape{len(class), cols}, oneHot(class, cols))))
	}
	mat := func(name string) gcInput { return gcInput{name, tensor.Shape{N, D}, gcRand(rng, N*D)} }
	vec := func(name string) gcInput { return gcInput{name, tensor.Shape{D}, gcRand(rng, D)} }
	return []gcCase{
		{"BiasAdd", []gcInput{mat("x"), vec("b")}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			y, err := BiasAdd(in[0], in[1])
			if err != nil {
				return nil, err
			}
			return gcWeighted(g, dt, y, "w", 1)
		}},
		{"ReLU", []gcInput{{"x", tensor.Shape{N, D}, away(gcRand(rng, N*D))}}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			y, err := ReLU(in[0])
			if err != nil {
				return nil, err
			}
			return gcWeighted(g, dt, y, "w", 2)
		}},
		{"RMSNorm", []gcInput{mat("x"), vec("gain")}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			y, err := RMSNorm(in[0], in[1], 1e-3)
			if err != nil {
				return nil, err
			}
			return gcWeighted(g, dt, y, "w", 3)
		}},
		{"CrossEntropy", []gcInput{{"logits", tensor.Shape{4, 3}, gcRand(rng, 12)}}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			return CrossEntropy(in[0], target(g, dt, "t", []int{2, 0, 1, 1}, 3))
		}},
		{"CrossEntropy scaled", []gcInput{{"logits", tensor.Shape{2, 4}, gcRand(rng, 8)}}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			ce, err := CrossEntropy(in[0], target(g, dt, "t", []int{3, 0}, 4))
			if err != nil {
				return nil, err
			}
			// Gorgonia's scalar Mul: the loss gradient reaching CrossEntropy is 2.5, not 1.
			if dt == tensor.Float32 {
				return G.Mul(ce, G.NewConstant(float32(2.5)))
			}
			return G.Mul(ce, G.NewConstant(2.5))
		}},
		{"Embedding", []gcInput{{"table", tensor.Shape{4, 3}, gcRand(rng, 12)}}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			y, err := Embedding(in[0], gcInt32Node(g, "ids", tensor.Shape{5}, []int32{3, 0, 3, 3, 1}))
			if err != nil {
				return nil, err
			}
			return gcWeighted(g, dt, y, "w", 4)
		}},
		{"model", []gcInput{{"table", tensor.Shape{6, D}, gcRand(rng, 6*D)}, vec("b"), vec("gain")}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			e, err := Embedding(in[0], gcInt32Node(g, "ids", tensor.Shape{N}, []int32{5, 1, 5}))
			if err != nil {
				return nil, err
			}
			h, err := BiasAdd(e, in[1])
			if err != nil {
				return nil, err
			}
			if h, err = ReLU(h); err != nil {
				return nil, err
			}
			if h, err = RMSNorm(h, in[2], 1e-6); err != nil {
				return nil, err
			}
			return CrossEntropy(h, target(g, dt, "t", []int{4, 1, 0}, D))
		}},
		// Rows of class probabilities (label smoothing), not one-hot.
		{"CrossEntropy soft targets", []gcInput{{"logits", tensor.Shape{3, 4}, gcRand(rng, 12)}}, func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			soft := []float64{0.7, 0.1, 0.1, 0.1, 0.25, 0.25, 0.25, 0.25, 0, 0.5, 0.3, 0.2}
			tg := G.NewMatrix(g, dt, G.WithShape(3, 4), G.WithName("t"), G.WithValue(gcDense(dt, tensor.Shape{3, 4}, soft)))
			return CrossEntropy(in[0], tg)
		}},
	}
}

func TestNNGradients(t *testing.T) {
	for _, c := range nnCases() {
		t.Run(c.name, func(t *testing.T) { gcRun(t, c) })
	}
}

func TestNNBadNodes(t *testing.T) {
	g := G.NewGraph()
	mk := func(name string, dt tensor.Dtype, s ...int) *G.Node {
		return G.NewTensor(g, dt, len(s), G.WithShape(s...), G.WithName(name), G.WithInit(G.Zeroes()))
	}
	x, b, b3 := mk("x", tensor.Float32, 4, 5), mk("b", tensor.Float32, 5), mk("b3", tensor.Float32, 3)
	x64, i32 := mk("x64", tensor.Float64, 4, 5), mk("i", tensor.Int32, 4, 5)
	t3, v := mk("t3", tensor.Float32, 4, 3), mk("v", tensor.Float32, 20)
	other := G.NewGraph()
	bo := G.NewVector(other, tensor.Float32, G.WithShape(5), G.WithName("bo"), G.WithInit(G.Zeroes()))
	eb := func(x, b *G.Node) error { _, err := BiasAdd(x, b); return err }
	er := func(x *G.Node) error { _, err := ReLU(x); return err }
	en := func(x, b *G.Node, eps float64) error { _, err := RMSNorm(x, b, eps); return err }
	ec := func(x, t *G.Node) error { _, err := CrossEntropy(x, t); return err }
	ee := func(x, ids *G.Node) error { _, err := Embedding(x, ids); return err }
	for _, c := range []struct {
		what  string
		err   error
		frags []string
	}{
		{"BiasAdd nil", eb(nil, b), []string{"BiasAdd", "x is nil"}},
		{"BiasAdd width", eb(x, b3), []string{"BiasAdd", "b has shape (3), want (D=5)"}},
		{"BiasAdd dtype", eb(x64, b), []string{"BiasAdd", "b has dtype float32"}},
		{"BiasAdd int", eb(i32, b), []string{"BiasAdd", "want float32 or float64"}},
		{"BiasAdd vector x", eb(v, b), []string{"BiasAdd", "x has shape (20)"}},
		{"BiasAdd graphs", eb(x, bo), []string{"BiasAdd", "another graph"}},
		{"ReLU nil", er(nil), []string{"ReLU", "x is nil"}},
		{"ReLU int", er(i32), []string{"ReLU", "want float32 or float64"}},
		{"RMSNorm eps", en(x, b, -1), []string{"RMSNorm", "eps -1"}},
		{"RMSNorm NaN eps", en(x, b, math.NaN()), []string{"RMSNorm", "eps NaN"}},
		{"RMSNorm gain", en(x, b3, 0), []string{"RMSNorm", "gain has shape (3)"}},
		{"CrossEntropy target", ec(x, t3), []string{"CrossEntropy", "target has shape (4, 3), want (N=4, C=5)"}},
		{"CrossEntropy dtype", ec(x64, x), []string{"CrossEntropy", "target has dtype float32"}},
		{"CrossEntropy vector", ec(v, v), []string{"CrossEntropy", "logits has shape (20)"}},
		{"Embedding float ids", ee(x, v), []string{"Embedding", "ids has dtype float32, want int32"}},
		{"Embedding matrix ids", ee(x, mk("i2", tensor.Int32, 2, 2)), []string{"Embedding", "ids has shape (2, 2)"}},
		{"Embedding vector table", ee(v, mk("i3", tensor.Int32, 3)), []string{"Embedding", "table has shape (20)"}},
	} {
		wantErr(t, c.what, c.err, c.frags...)
	}
}

func TestEmbeddingForward(t *testing.T) {
	g := G.NewGraph()
	table := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 2), G.WithName("table"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))))
	ids := gcInt32Node(g, "ids", tensor.Shape{4}, []int32{2, 2, 0, 1})
	y, err := Embedding(table, ids)
	if err != nil {
		t.Fatal(err)
	}
	v := runRead(t, g, y)
	if d := reftest.MaxDiff(gcFloats(v[0]), []float64{5, 6, 5, 6, 1, 2, 3, 4}); d != 0 || !v[0].Shape().Eq(tensor.Shape{4, 2}) {
		t.Errorf("Embedding = %v, want rows 2, 2, 0, 1 of the table", v[0])
	}
	// An id outside the table is an error at run time.
	h := G.NewGraph()
	table2 := G.NewMatrix(h, tensor.Float32, G.WithShape(3, 2), G.WithName("table"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))))
	if _, err := Embedding(table2, gcInt32Node(h, "ids", tensor.Shape{2}, []int32{0, 3})); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(h)
	defer m.Close()
	wantErr(t, "bad id", m.RunAll(), "Embedding", "id 3 at 1 is outside [0, 3)")
}

func TestNNBadValues(t *testing.T) {
	m := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))
	m32 := tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))
	v2 := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))
	v3 := tensor.New(tensor.WithShape(3), tensor.WithBacking([]float64{1, 2, 3}))
	keep := append([]float64(nil), m.Data().([]float64)...)
	do := func(op G.Op, vs ...G.Value) error { _, err := op.Do(vs...); return err }
	for _, c := range []struct {
		what  string
		err   error
		frags []string
	}{
		{"BiasAdd arity", do(biasAddOp{}, m), []string{"BiasAdd", "got 1 inputs, want 2"}},
		{"BiasAdd width", do(biasAddOp{}, m, v2), []string{"BiasAdd", "b has shape (2), want (D=3)"}},
		{"BiasAdd dtype", do(biasAddOp{}, m32, v3), []string{"BiasAdd", "b has dtype float64, want float32"}},
		{"ColSum vector", do(colSumOp{}, v3), []string{"ColSum", "x has shape (3)"}},
		{"ReLU shape", do(reluOp{dims: 2}, v3), []string{"ReLU", "want 2 dimensions"}},
		{"ReLUGrad shapes", do(reluGradOp{dims: 2}, m, m32), []string{"ReLUGrad", "input 1 is float32"}},
		{"RMSNorm gain", do(rmsOp{eps: 0}, m, v2), []string{"RMSNorm", "gain has shape (2)"}},
		{"RMSNormGrad dy", do(rmsGradOp{eps: 0, which: 0}, m, v3, v3), []string{"RMSNormGrad", "dy has shape (3)"}},
		{"CrossEntropy target", do(ceOp{}, m, v3), []string{"CrossEntropy", "target has shape (3)"}},
		{"CrossEntropyGrad dy shape", do(ceGradOp{}, m, m, v2), []string{"CrossEntropyGrad", "dy has shape (2), want a scalar"}},
		{"CrossEntropyGrad dy dtype", do(ceGradOp{}, m, m, G.NewF32(1)), []string{"CrossEntropyGrad", "dy has dtype float32, want float64"}},
		{"CrossEntropyGrad nil dy", do(ceGradOp{}, m, m, nil), []string{"CrossEntropyGrad", "input 2 is nil"}},
		{"Embedding rows", do(embedOp{v: 3}, m, tensor.New(tensor.WithShape(1), tensor.WithBacking([]int32{0}))), []string{"Embedding", "table has shape (2, 3), want (V=3, D>=1)"}},
		{"Embedding float ids", do(embedOp{v: 2}, m, v2), []string{"Embedding", "ids has dtype float64, want int32"}},
		{"EmbeddingGrad ids", do(embedGradOp{v: 4}, m, tensor.New(tensor.WithShape(3), tensor.WithBacking([]int32{0, 1, 2}))), []string{"EmbeddingGrad", "ids has shape (3), want (N=2)"}},
	} {
		wantErr(t, c.what, c.err, c.frags...)
	}
	if got := m.Data().([]float64); reftest.MaxDiff(got, keep) != 0 {
		t.Errorf("a failed call changed its input: %v", got)
	}
}
