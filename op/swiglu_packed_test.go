package op

import (
	"math"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// Tests of SwiGLUPacked: forward against the formula on each row's halves, the same bits as
// SwiGLU on the halves split apart (forward and gradient), gradients against float64 central
// differences, and bad input.

func TestSwiGLUPackedForward(t *testing.T) {
	for _, c := range []struct{ rows, f int }{{1, 1}, {3, 4}, {5, 7}} {
		rng := rand.New(rand.NewSource(int64(c.rows*10 + c.f)))
		z := gcRand(rng, c.rows*2*c.f)
		want := make([]float64, c.rows*c.f)
		for r := 0; r < c.rows; r++ {
			for j := 0; j < c.f; j++ {
				a, b := z[r*2*c.f+j], z[r*2*c.f+c.f+j]
				want[r*c.f+j] = a / (1 + math.Exp(-a)) * b
			}
		}
		for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
			g := G.NewGraph()
			zn := G.NewMatrix(g, dt, G.WithShape(c.rows, 2*c.f), G.WithName("z"), G.WithValue(gcDense(dt, tensor.Shape{c.rows, 2 * c.f}, z)))
			got := runRead(t, g, must(SwiGLUPacked(zn)))[0]
			if !got.Shape().Eq(tensor.Shape{c.rows, c.f}) || got.Dtype() != dt {
				t.Fatalf("%v: output %v %v, want (%d, %d)", dt, got.Dtype(), got.Shape(), c.rows, c.f)
			}
			tol := map[tensor.Dtype]float64{tensor.Float64: 1e-14, tensor.Float32: 1e-6}[dt]
			if d := maxRelDiff(gcFloats(got), want); d > tol {
				t.Errorf("rows=%d f=%d %v: relative difference %g from the formula", c.rows, c.f, dt, d)
			}
		}
	}
}

// TestSwiGLUPackedMatchesSwiGLU: in float32 and bfloat16, SwiGLUPacked(z) and the gradient it
// gives z are bit for bit SwiGLU(a, b) and its gradients with a and b the halves of z.
func TestSwiGLUPackedMatchesSwiGLU(t *testing.T) {
	const rows, f = 6, 10
	rng := rand.New(rand.NewSource(9))
	z, w := gcRand(rng, rows*2*f), gcRand(rng, rows*f)
	a, b := make([]float64, rows*f), make([]float64, rows*f)
	for r := 0; r < rows; r++ {
		copy(a[r*f:(r+1)*f], z[r*2*f:r*2*f+f])
		copy(b[r*f:(r+1)*f], z[r*2*f+f:(r+1)*2*f])
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, bfloat16.Dtype} {
		val := func(v []float64, s ...int) *tensor.Dense {
			d := gcDense(tensor.Float32, tensor.Shape(s), v)
			if dt == bfloat16.Dtype {
				bs := make([]bfloat16.BFloat16, len(v))
				_ = bfloat16.FromFloat32s(bs, d.Data().([]float32))
				return tensor.New(tensor.WithShape(s...), tensor.WithBacking(bs))
			}
			return d
		}
		// packed: y = SwiGLUPacked(z), dz from the cost Σ y·w
		g := G.NewGraph()
		zn := G.NewMatrix(g, dt, G.WithShape(rows, 2*f), G.WithName("z"), G.WithValue(val(z, rows, 2*f)))
		y := must(SwiGLUPacked(zn))
		dz := must(swigluPackedGradOp{}.apply(zn, G.NewMatrix(g, dt, G.WithShape(rows, f), G.WithName("w"), G.WithValue(val(w, rows, f)))))
		got := runRead(t, g, y, dz)
		// two inputs
		g2 := G.NewGraph()
		an := G.NewMatrix(g2, dt, G.WithShape(rows, f), G.WithName("a"), G.WithValue(val(a, rows, f)))
		bn := G.NewMatrix(g2, dt, G.WithShape(rows, f), G.WithName("b"), G.WithValue(val(b, rows, f)))
		y2 := must(SwiGLU(an, bn))
		args := G.Nodes{an, bn, y2, G.NewMatrix(g2, dt, G.WithShape(rows, f), G.WithName("w"), G.WithValue(val(w, rows, f)))}
		da := must(G.ApplyOp(pwGradOp{k: pwSwiGLU, dims: 2, which: 0}, args...))
		db := must(G.ApplyOp(pwGradOp{k: pwSwiGLU, dims: 2, which: 1}, args...))
		want := runRead(t, g2, y2, da, db)
		if !bitsEqual(got[0], want[0]) {
			t.Errorf("%v forward: packed %v, two inputs %v", dt, got[0], want[0])
		}
		gz, ga, gb := bitsOf(got[1]), bitsOf(want[1]), bitsOf(want[2])
		for r := 0; r < rows; r++ {
			for j := 0; j < f; j++ {
				if gz[r*2*f+j] != ga[r*f+j] || gz[r*2*f+f+j] != gb[r*f+j] {
					t.Fatalf("%v gradient row %d col %d: packed (%v, %v), two inputs (%v, %v)", dt, r, j, gz[r*2*f+j], gz[r*2*f+f+j], ga[r*f+j], gb[r*f+j])
				}
			}
		}
	}
}

// bitsOf returns the bit patterns of a float32 or bfloat16 value's elements.
func bitsOf(v G.Value) []uint32 {
	switch d := v.Data().(type) {
	case []float32:
		o := make([]uint32, len(d))
		for i, x := range d {
			o[i] = math.Float32bits(x)
		}
		return o
	case []bfloat16.BFloat16:
		o := make([]uint32, len(d))
		for i, x := range d {
			o[i] = uint32(x)
		}
		return o
	}
	panic("bitsOf: " + v.Dtype().String())
}

func (op swigluPackedGradOp) apply(z, dy *G.Node) (*G.Node, error) { return G.ApplyOp(op, z, dy) }

func TestSwiGLUPackedGradient(t *testing.T) {
	rng := rand.New(rand.NewSource(11))
	gcRun(t, gcCase{name: "SwiGLUPacked", inputs: []gcInput{{"z", tensor.Shape{4, 6}, gcRand(rng, 24)}},
		build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			y, err := SwiGLUPacked(in[0])
			if err != nil {
				return nil, err
			}
			return gcWeighted(g, dt, y, "w_packed", 12)
		}})
}

func TestSwiGLUPackedBadInput(t *testing.T) {
	g := G.NewGraph()
	odd := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 3), G.WithName("odd"))
	vec := G.NewVector(g, tensor.Float32, G.WithShape(6), G.WithName("vec"))
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 4), G.WithName("ids"))
	for _, c := range []struct {
		name string
		z    *G.Node
		want string
	}{{"nil", nil, "z is nil"}, {"odd columns", odd, "want (R, 2F)"}, {"vector", vec, "want (R, 2F)"}, {"int32", ids, "dtype int32"}} {
		_, err := SwiGLUPacked(c.z)
		wantErr(t, c.name, err, c.want)
	}
	f32 := func(s ...int) *tensor.Dense { return tensor.New(tensor.WithShape(s...), tensor.Of(tensor.Float32)) }
	f64 := func(s ...int) *tensor.Dense { return tensor.New(tensor.WithShape(s...), tensor.Of(tensor.Float64)) }
	for _, c := range []struct {
		name string
		f    func() (G.Value, error)
	}{
		{"Do odd columns", func() (G.Value, error) { return swigluPackedOp{}.Do(f32(2, 3)) }},
		{"Do two inputs", func() (G.Value, error) { return swigluPackedOp{}.Do(f32(2, 4), f32(2, 4)) }},
		{"Do nil", func() (G.Value, error) { return swigluPackedOp{}.Do(nil) }},
		{"grad dy shape", func() (G.Value, error) { return swigluPackedGradOp{}.Do(f32(2, 4), f32(2, 4)) }},
		{"grad dy dtype", func() (G.Value, error) { return swigluPackedGradOp{}.Do(f32(2, 4), f64(2, 2)) }},
		{"grad dy nil", func() (G.Value, error) { return swigluPackedGradOp{}.Do(f32(2, 4), nil) }},
	} {
		if v, err := c.f(); err == nil {
			t.Errorf("%s: got %v, no error", c.name, v)
		}
	}
}
