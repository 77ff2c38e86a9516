package op

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/reftest"
)

// Tests of SwiGLU, GELU, Sigmoid, Softmax and RowNormalize: forward values against formulas
// written out here, gradients against float64 central differences (SymDiff and DoDiff), and
// bad input.

func refSigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

type pwCase struct {
	name  string
	nIn   int
	shape tensor.Shape
	build func(in ...*G.Node) (*G.Node, error)
	ref   func(in [][]float64, cols int) []float64
}

func pwCases() []pwCase {
	elem := func(f func(a, b float64) float64) func(in [][]float64, cols int) []float64 {
		return func(in [][]float64, cols int) []float64 {
			out := make([]float64, len(in[0]))
			for i, a := range in[0] {
				b := 0.0
				if len(in) > 1 {
					b = in[1][i]
				}
				out[i] = f(a, b)
			}
			return out
		}
	}
	return []pwCase{
		{"SwiGLU", 2, tensor.Shape{3, 5}, func(in ...*G.Node) (*G.Node, error) { return SwiGLU(in[0], in[1]) },
			elem(func(a, b float64) float64 { return a / (1 + math.Exp(-a)) * b })},
		{"GELU", 1, tensor.Shape{4, 3}, func(in ...*G.Node) (*G.Node, error) { return GELU(in[0]) },
			elem(func(a, _ float64) float64 {
				return a / 2 * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(a+0.044715*a*a*a)))
			})},
		{"Sigmoid", 1, tensor.Shape{2, 7}, func(in ...*G.Node) (*G.Node, error) { return Sigmoid(in[0]) },
			elem(func(a, _ float64) float64 { return refSigmoid(a) })},
		{"Softmax", 1, tensor.Shape{3, 6}, func(in ...*G.Node) (*G.Node, error) { return Softmax(in[0]) },
			func(in [][]float64, cols int) []float64 {
				out := make([]float64, len(in[0]))
				for r := 0; r < len(out); r += cols {
					var s float64
					for j := r; j < r+cols; j++ {
						s += math.Exp(in[0][j])
					}
					for j := r; j < r+cols; j++ {
						out[j] = math.Exp(in[0][j]) / s
					}
				}
				return out
			}},
		{"RowNormalize", 1, tensor.Shape{4, 3}, func(in ...*G.Node) (*G.Node, error) { return RowNormalize(in[0]) },
			func(in [][]float64, cols int) []float64 {
				out := make([]float64, len(in[0]))
				for r := 0; r < len(out); r += cols {
					var s float64
					for j := r; j < r+cols; j++ {
						s += in[0][j]
					}
					for j := r; j < r+cols; j++ {
						out[j] = in[0][j] / s
					}
				}
				return out
			}},
	}
}

// pwData draws inputs; RowNormalize gets positive rows (sums away from 0), Softmax a wide range.
func pwData(c pwCase, seed int64) [][]float64 {
	rng := rand.New(rand.NewSource(seed))
	n := c.shape.TotalSize()
	in := make([][]float64, c.nIn)
	for i := range in {
		in[i] = make([]float64, n)
		for j := range in[i] {
			switch c.name {
			case "RowNormalize":
				in[i][j] = 0.2 + rng.Float64()
			case "Softmax":
				in[i][j] = rng.NormFloat64() * 3
			default:
				in[i][j] = rng.NormFloat64() * 2
			}
		}
	}
	return in
}

func TestPointwiseForward(t *testing.T) {
	for _, c := range pwCases() {
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			data := pwData(c, 1)
			g := G.NewGraph()
			in := make([]*G.Node, c.nIn)
			for i := range in {
				in[i] = G.NewTensor(g, dt, 2, G.WithShape(c.shape...), G.WithName(string(rune('a'+i))), G.WithValue(gcDense(dt, c.shape, data[i])))
			}
			y, err := c.build(in...)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			got := runRead(t, g, y)[0]
			want := c.ref(data, c.shape[1])
			tol := 1e-14
			if dt == tensor.Float32 {
				tol = 1e-6
			}
			if d := reftest.MaxDiff(gcFloats(got), want); d > tol {
				t.Errorf("%s %v: max diff %g from the formula", c.name, dt, d)
			}
			if !got.Shape().Eq(c.shape) || got.Dtype() != dt {
				t.Errorf("%s %v: output %v %v", c.name, dt, got.Dtype(), got.Shape())
			}
		}
	}
}

func TestPointwiseGradients(t *testing.T) {
	for _, c := range pwCases() {
		data := pwData(c, 2)
		inputs := make([]gcInput, c.nIn)
		for i := range inputs {
			inputs[i] = gcInput{string(rune('a' + i)), c.shape, data[i]}
		}
		c := c
		t.Run(c.name, func(t *testing.T) {
			gcRun(t, gcCase{name: c.name, inputs: inputs, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				y, err := c.build(in...)
				if err != nil {
					return nil, err
				}
				return gcWeighted(g, dt, y, "w_"+c.name, 5)
			}})
		})
	}
}

// TestSoftmaxLargeRows: rows far above the first element (where Gorgonia's SoftMax gives NaN)
// stay finite and sum to 1.
func TestSoftmaxLargeRows(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 3), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float32{-1000, -999, -1001, 1000, 999, 1001}))))
	y := must(Softmax(x))
	v := runRead(t, g, y)[0].Data().([]float32)
	for r := 0; r < 2; r++ {
		var s float32
		for _, p := range v[3*r : 3*r+3] {
			if math.IsNaN(float64(p)) {
				t.Fatalf("row %d: NaN in %v", r, v)
			}
			s += p
		}
		if !(math.Abs(float64(s)-1) <= 1e-6) {
			t.Errorf("row %d sums to %g", r, s)
		}
	}
}

func TestPointwiseBadInput(t *testing.T) {
	g := G.NewGraph()
	m := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 3), G.WithName("m"))
	m64 := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("m64"))
	other := G.NewMatrix(g, tensor.Float32, G.WithShape(3, 2), G.WithName("other"))
	v := G.NewVector(g, tensor.Float32, G.WithShape(6), G.WithName("v"))
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 3), G.WithName("ids"))
	sc := G.NewScalar(g, tensor.Float64, G.WithName("sc"))
	cases := []struct {
		name string
		f    func() (*G.Node, error)
		want string
	}{
		{"nil", func() (*G.Node, error) { return Sigmoid(nil) }, "input 0 is nil"},
		{"int", func() (*G.Node, error) { return GELU(ids) }, "input 0"},
		{"dtypes", func() (*G.Node, error) { return SwiGLU(m, m64) }, "dtypes"},
		{"shapes", func() (*G.Node, error) { return SwiGLU(m, other) }, "shapes"},
		{"softmax vector", func() (*G.Node, error) { return Softmax(v) }, "want a matrix"},
		{"normalize vector", func() (*G.Node, error) { return RowNormalize(v) }, "want a matrix"},
		// Scalars used to meet Gorgonia's own type-inference text ("Unequal length. a: [] b [a]").
		{"GELU scalar", func() (*G.Node, error) { return GELU(sc) }, "GELU: input 0 is a scalar, want a tensor of at least one dimension"},
		{"Sigmoid scalar", func() (*G.Node, error) { return Sigmoid(sc) }, "Sigmoid: input 0 is a scalar"},
		{"SwiGLU scalars", func() (*G.Node, error) { return SwiGLU(sc, sc) }, "SwiGLU: input 0 is a scalar"},
		{"ReLU scalar", func() (*G.Node, error) { return ReLU(sc) }, "ReLU: x is a scalar, want a tensor of at least one dimension"}, // it said "want a non-empty tensor"
	}
	for _, c := range cases {
		n, err := c.f()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, %v; want an error containing %q", c.name, n, err, c.want)
		}
	}
	// Do with mismatched values errors and does not panic.
	if _, err := (pwOp{k: pwSwiGLU, dims: 2}).Do(gcDense(tensor.Float32, tensor.Shape{2, 3}, make([]float64, 6)), gcDense(tensor.Float64, tensor.Shape{2, 3}, make([]float64, 6))); err == nil {
		t.Errorf("Do with mixed dtypes: no error")
	}
}

func TestScale(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	x := gcRand(rng, 12)
	gcRun(t, gcCase{name: "Scale", inputs: []gcInput{{"x", tensor.Shape{3, 4}, x}}, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
		y, err := Scale(in[0], 2.5)
		if err != nil {
			return nil, err
		}
		return gcWeighted(g, dt, y, "w_scale", 6)
	}})
	g := G.NewGraph()
	xn := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 4), G.WithName("x"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{3, 4}, x)))
	got := gcFloats(runRead(t, g, must(Scale(xn, -0.5)))[0])
	for i := range x {
		if got[i] != -0.5*x[i] {
			t.Fatalf("Scale: [%d] = %v, want %v", i, got[i], -0.5*x[i])
		}
	}
	if _, err := Scale(nil, 1); err == nil {
		t.Error("Scale(nil): no error")
	}
	// Constants that would make every element NaN, ±Inf or 0 are refused (they used to build
	// and run); 0 itself and a float64 x's 1e300 are fine.
	for _, c := range []struct {
		dt   tensor.Dtype
		c    float64
		want string
	}{
		{tensor.Float64, math.NaN(), "constant NaN is not finite"},
		{tensor.Float32, math.Inf(-1), "constant -Inf is not finite"},
		{tensor.Float32, 1e300, "constant 1e+300 rounds to +Inf in float32"},
		{tensor.Float32, 1e-300, "constant 1e-300 rounds to 0 in float32"},
		{tensor.Float32, 0, ""},
		{tensor.Float64, 1e300, ""},
	} {
		xn := G.NewMatrix(G.NewGraph(), c.dt, G.WithShape(2, 2), G.WithName("x"))
		_, err := Scale(xn, c.c)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Scale(%v x, %v): %v, want %q", c.dt, c.c, err, c.want)
		}
	}
}

// TestScaleScalarGradients: Scale of a scalar node (a loss times a coefficient), and Cast of
// one, have the same gradient on the lisp machine (DoDiff) as on the tape machine. The lisp machine's gradient of
// a scalar is a host *G.F64 or *G.F32, which DoDiff used to refuse ("gradient of x is a
// *gorgonia.F64 view or non-dense value").
func TestScaleScalarGradients(t *testing.T) {
	tests := []struct {
		name  string
		dt    tensor.Dtype
		shape []int // x's shape; nil: a scalar
		// loss makes the scalar that Scale multiplies from x (x itself, or a loss of it).
		loss func(x *G.Node) *G.Node
	}{
		{"float64 scalar", tensor.Float64, nil, func(x *G.Node) *G.Node { return x }},
		{"float32 scalar", tensor.Float32, nil, func(x *G.Node) *G.Node { return x }},
		// A 0-d *tensor.Dense as the scalar's value (shape {}): Scale read it as empty and gave
		// 0, and the lisp machine's gradient added into it was lost.
		{"float64 0-d tensor", tensor.Float64, []int{}, func(x *G.Node) *G.Node { return x }},
		{"float32 0-d tensor", tensor.Float32, []int{}, func(x *G.Node) *G.Node { return x }},
		{"sum of a matrix", tensor.Float64, []int{2, 3}, func(x *G.Node) *G.Node { return must(G.Sum(x)) }},
		{"z-loss", tensor.Float32, []int{2, 3}, func(x *G.Node) *G.Node { return must(ZLoss(x, 0.5)) }},
		{"added losses", tensor.Float64, []int{2, 3}, func(x *G.Node) *G.Node {
			return must(AddScalars(must(ZLoss(x, 0.5)), must(G.Sum(x))))
		}},
		// Cast.DoDiff refused scalars ("scalar casts are not differentiable on the lisp machine").
		{"float32 scalar cast to float64", tensor.Float32, nil, func(x *G.Node) *G.Node { return must(Cast(x, tensor.Float64)) }},
		{"float64 scalar cast to float32", tensor.Float64, nil, func(x *G.Node) *G.Node { return must(Cast(x, tensor.Float32)) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := []float64{0.3, -1.2, 0.7, 2.1, -0.4, 0.9}
			build := func(g *G.ExprGraph) (x, cost *G.Node) {
				switch {
				case tt.shape == nil:
					var v G.Value = G.NewF64(data[0])
					if tt.dt == tensor.Float32 {
						v = G.NewF32(float32(data[0]))
					}
					x = G.NewScalar(g, tt.dt, G.WithName("x"), G.WithValue(v))
				case len(tt.shape) == 0:
					v := tensor.New(tensor.FromScalar(data[0]))
					if tt.dt == tensor.Float32 {
						v = tensor.New(tensor.FromScalar(float32(data[0])))
					}
					x = G.NewScalar(g, tt.dt, G.WithName("x"), G.WithValue(v))
				default:
					x = G.NewMatrix(g, tt.dt, G.WithShape(tt.shape...), G.WithName("x"), G.WithValue(gcDense(tt.dt, tensor.Shape(tt.shape), data)))
				}
				return x, must(Scale(tt.loss(x), -2.5))
			}
			sym, do := tapeAndLispGrads(t, build)
			if a, b := gcFloats(sym), gcFloats(do); fmt.Sprint(a) != fmt.Sprint(b) {
				t.Errorf("gradient: tape %v, lisp %v", a, b)
			}
			// and both against a central difference of the cost (eps large enough for the
			// float32 legs' rounding; the costs are at most quadratic or smooth)
			const eps = 1e-3
			n := 1
			if tt.shape != nil {
				n = tensor.Shape(tt.shape).TotalSize()
			}
			base := append([]float64(nil), data...)
			cost := func(i int, d float64) float64 {
				data = append(data[:0], base...)
				data[i] += d
				g := G.NewGraph()
				_, c := build(g)
				return gcFloats(runRead(t, g, c)[0])[0]
			}
			num := make([]float64, n)
			for i := range num {
				num[i] = (cost(i, eps) - cost(i, -eps)) / (2 * eps)
			}
			data = append(data[:0], base...)
			if d := maxRelDiff(gcFloats(sym), num); d > 1e-3 {
				t.Errorf("gradient %v, central difference %v (rel diff %g)", gcFloats(sym), num, d)
			}
		})
	}
}

// TestActivationsBFloat16: bfloat16 SwiGLU and GELU on the CPU compute in float32 and round
// once: within one bfloat16 rounding (2⁻⁸ relative) of the float64 formula.
func TestActivationsBFloat16(t *testing.T) {
	rng := rand.New(rand.NewSource(12))
	a, b := gcRand(rng, 24), gcRand(rng, 24)
	ab := make([]bfloat16.BFloat16, len(a))
	bb := make([]bfloat16.BFloat16, len(b))
	for i := range a {
		ab[i], bb[i] = bfloat16.FromFloat32(float32(3*a[i])), bfloat16.FromFloat32(float32(b[i]))
	}
	g := G.NewGraph()
	an := G.NewMatrix(g, bfloat16.Dtype, G.WithShape(4, 6), G.WithName("a"), G.WithValue(tensor.New(tensor.WithShape(4, 6), tensor.WithBacking(ab))))
	bn := G.NewMatrix(g, bfloat16.Dtype, G.WithShape(4, 6), G.WithName("b"), G.WithValue(tensor.New(tensor.WithShape(4, 6), tensor.WithBacking(bb))))
	out := runRead(t, g, must(SwiGLU(an, bn)), must(GELU(an)))
	for i := range ab {
		x, y := float64(ab[i].Float32()), float64(bb[i].Float32())
		for j, want := range []float64{x / (1 + math.Exp(-x)) * y, x / 2 * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))} {
			got := float64(out[j].Data().([]bfloat16.BFloat16)[i].Float32())
			if !(math.Abs(got-want) <= math.Abs(want)/256+1e-30) {
				t.Errorf("op %d [%d]: %v, want %v", j, i, got, want)
			}
		}
	}
	if _, err := Softmax(an); err == nil {
		t.Error("bfloat16 Softmax: no error")
	}
}

func TestScaleRows(t *testing.T) {
	rng := rand.New(rand.NewSource(14))
	x, s := gcRand(rng, 5*3), gcRand(rng, 5)
	gcRun(t, gcCase{name: "ScaleRows", inputs: []gcInput{{"x", tensor.Shape{5, 3}, x}, {"s", tensor.Shape{5}, s}}, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
		y, err := ScaleRows(in[0], in[1])
		if err != nil {
			return nil, err
		}
		return gcWeighted(g, dt, y, "w_sr", 15)
	}})
	g := G.NewGraph()
	xn := G.NewMatrix(g, tensor.Float64, G.WithShape(5, 3), G.WithName("x"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{5, 3}, x)))
	sn := G.NewVector(g, tensor.Float64, G.WithShape(5), G.WithName("s"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{5}, s)))
	got := gcFloats(runRead(t, g, must(ScaleRows(xn, sn)))[0])
	for i := range x {
		if got[i] != x[i]*s[i/3] {
			t.Fatalf("[%d] = %v, want %v", i, got[i], x[i]*s[i/3])
		}
	}
	s32 := G.NewVector(g, tensor.Float32, G.WithShape(5), G.WithName("s32"))
	s4 := G.NewVector(g, tensor.Float64, G.WithShape(4), G.WithName("s4"))
	for _, c := range []struct {
		name string
		s    *G.Node
	}{{"dtype", s32}, {"rows", s4}, {"nil", nil}} {
		if _, err := ScaleRows(xn, c.s); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

// TestElementwiseGradientsOtherRanks: the element-wise ops take tensors of any rank (their
// dims parameter), which the other gradient checks use only as matrices: SwiGLU, GELU,
// Sigmoid, ReLU and Scale on a vector and on a 3-d tensor, against float64 central
// differences through SymDiff and DoDiff.
func TestElementwiseGradientsOtherRanks(t *testing.T) {
	ops := []struct {
		name string
		nIn  int
		f    func(in []*G.Node) (*G.Node, error)
	}{
		{"SwiGLU", 2, func(in []*G.Node) (*G.Node, error) { return SwiGLU(in[0], in[1]) }},
		{"GELU", 1, func(in []*G.Node) (*G.Node, error) { return GELU(in[0]) }},
		{"Sigmoid", 1, func(in []*G.Node) (*G.Node, error) { return Sigmoid(in[0]) }},
		{"ReLU", 1, func(in []*G.Node) (*G.Node, error) { return ReLU(in[0]) }},
		{"Scale", 1, func(in []*G.Node) (*G.Node, error) { return Scale(in[0], -1.5) }},
	}
	rng := rand.New(rand.NewSource(41))
	for _, shape := range []tensor.Shape{{5}, {2, 3, 2}} {
		for _, o := range ops {
			inputs := make([]gcInput, o.nIn)
			for i := range inputs {
				v := gcRand(rng, shape.TotalSize())
				for j := range v { // away from ReLU's kink
					if math.Abs(v[j]) < 0.05 {
						v[j] += 0.1
					}
				}
				inputs[i] = gcInput{string(rune('a' + i)), shape, v}
			}
			o := o
			gcRun(t, gcCase{name: fmt.Sprintf("%s %v", o.name, shape), inputs: inputs, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
				y, err := o.f(in)
				if err != nil {
					return nil, err
				}
				if !y.Shape().Eq(shape) {
					return nil, fmt.Errorf("%s: shape %v, want %v", o.name, y.Shape(), shape)
				}
				return gcWeighted(g, dt, G.Must(G.Square(y)), "w_rank", 42)
			}})
		}
	}
}
