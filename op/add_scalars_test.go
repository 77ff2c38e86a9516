package op

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestAddScalars: on the host AddScalars equals a chain of G.Add bit for bit (value and
// gradients); on a (fake) device it adds device scalars that G.Add cannot, with the same bits.
func TestAddScalars(t *testing.T) {
	const T, K, E = 12, 2, 5
	idv := lossIDs(T, K, E, 21)
	sv := randFloats(newRNG(22), T*E)
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		build := func(useG bool) (*G.ExprGraph, []*G.Node) {
			g := G.NewGraph()
			ids := idsNode(g, "ids", T, K, idv)
			s := G.NewMatrix(g, dt, G.WithShape(T, E), G.WithName("s"), G.WithValue(denseOf(dt, sv, T, E)))
			ls := []*G.Node{must(BalanceLoss(ids, s, E, K, 1, 0.01)), must(BalanceLoss(ids, s, E, K, 2, 0.3)), must(ZLoss(s, 0.001))}
			var cost *G.Node
			if useG {
				cost = must(G.Add(must(G.Add(ls[0], ls[1])), ls[2]))
			} else {
				cost = must(AddScalars(ls...))
			}
			grads, err := G.Grad(cost, s)
			if err != nil {
				t.Fatal(err)
			}
			return g, []*G.Node{cost, grads[0], ls[0]}
		}
		g, outs := build(true)
		want := runRead(t, g, outs...)
		g, outs = build(false)
		got := runRead(t, g, outs...)
		for i := range want {
			if !bitsEqual(got[i], want[i]) {
				t.Errorf("%v host output %d: AddScalars %v, G.Add %v", dt, i, got[i], want[i])
			}
		}
		g, outs = build(false)
		dev := newFakeDevice().run(t, g, outs...)
		for i := range want {
			if !bitsEqual(dev[i], want[i]) {
				t.Errorf("%v device output %d: AddScalars %v, host G.Add %v", dt, i, dev[i], want[i])
			}
		}
		for _, i := range []int{0, 2} { // the sum, and an input left as it was
			if d, ok := dev[i].(*tensor.Dense); !ok || d.Shape().Dims() != 0 {
				t.Errorf("%v: device value %d is %T %v, want a tensor of scalar shape", dt, i, dev[i], dev[i].Shape())
			}
		}
	}
}

// TestAddScalarsGradCheck checks the gradient through SymDiff and DoDiff.
func TestAddScalarsGradCheck(t *testing.T) {
	gcRun(t, gcCase{
		name:   "AddScalars",
		inputs: []gcInput{{"x", tensor.Shape{3, 4}, randFloats(newRNG(23), 12)}},
		build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
			a, err := ZLoss(in[0], 0.5)
			if err != nil {
				return nil, err
			}
			b, err := G.Sum(in[0])
			if err != nil {
				return nil, err
			}
			c, err := G.Mul(b, b)
			if err != nil {
				return nil, err
			}
			return AddScalars(a, c, a)
		},
	})
}

func TestAddScalarsBadInput(t *testing.T) {
	g := G.NewGraph()
	a := G.NewScalar(g, tensor.Float64, G.WithName("a"), G.WithValue(1.0))
	b := G.NewScalar(g, tensor.Float32, G.WithName("b"), G.WithValue(float32(1)))
	v := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("v"), G.WithValue(denseOf(tensor.Float64, []float64{1, 2}, 2)))
	other := G.NewScalar(G.NewGraph(), tensor.Float64, G.WithName("o"), G.WithValue(1.0))
	for _, c := range []struct {
		name string
		xs   []*G.Node
		want string
	}{
		{"none", nil, "no inputs"},
		{"nil", []*G.Node{a, nil}, "input 1 is nil"},
		{"dtypes", []*G.Node{a, b}, "input 1 has dtype float32, input 0 has float64"},
		{"vector", []*G.Node{a, v}, "input 1 has shape (2), want a scalar"},
		{"graphs", []*G.Node{a, other}, "another graph"},
	} {
		n, err := AddScalars(c.xs...)
		if err == nil || n != nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, %v; want an error containing %q", c.name, n, err, c.want)
		}
	}
	if n, err := AddScalars(a); err != nil || n != a {
		t.Errorf("one input: got %v, %v; want the input itself", n, err)
	}
	if _, err := (addScalarsOp{n: 2}).Do(G.NewF64(1), G.NewF32(2)); err == nil || !strings.Contains(err.Error(), "dtype") {
		t.Errorf("Do with mixed dtypes: %v", err)
	}
	if v, err := (addScalarsOp{n: 3}).Do(G.NewF64(1), G.NewF64(math.Pi), G.NewF64(2)); err != nil || v.Data().(float64) != (1+math.Pi)+2 {
		t.Errorf("Do: %v, %v", v, err)
	}
}

// TestAddScalarsMixesHostAndDevice: host scalars (constants, a host loss) join device
// scalars on a (fake) device, in any position, with the bits of the host sum.
func TestAddScalarsMixesHostAndDevice(t *testing.T) {
	sv := randFloats(newRNG(24), 12)
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, pattern := range []string{"hd", "dh", "hhd", "dhd", "hdh", "ddh", "hdd"} {
			build := func() (*G.ExprGraph, *G.Node) {
				g := G.NewGraph()
				s := G.NewMatrix(g, dt, G.WithShape(3, 4), G.WithName("s"), G.WithValue(denseOf(dt, sv, 3, 4)))
				var xs []*G.Node
				for i, c := range pattern {
					if c == 'd' { // a device loss on the fake device
						xs = append(xs, must(ZLoss(s, 0.1*float64(i+1))))
						continue
					}
					v := any(float32(0.3) * float32(i+1))
					if dt == tensor.Float64 {
						v = 0.3 * float64(i+1)
					}
					xs = append(xs, G.NewConstant(v, G.In(g)))
				}
				return g, must(AddScalars(xs...))
			}
			g, n := build()
			want := runRead(t, g, n)[0]
			g, n = build()
			got := newFakeDevice().run(t, g, n)[0]
			if d, ok := got.(*tensor.Dense); !ok || d.Shape().Dims() != 0 {
				t.Errorf("%v %s: device sum is %T, want a tensor of scalar shape", dt, pattern, got)
				continue
			}
			if !bitsEqual(got, want) {
				t.Errorf("%v %s: device sum %v, host sum %v", dt, pattern, got, want)
			}
		}
	}
}

// TestAddScalarsOtherDevice: a scalar on another device than the first device input (a value
// of another backend) is an error; it was taken for a host scalar and read through its Data(),
// from the host.
func TestAddScalarsOtherDevice(t *testing.T) {
	for _, in := range [][]string{{"a", "b"}, {"h", "a", "b"}, {"a", "h", "b"}} {
		a, b := newFakeDevice(), newFakeDevice()
		vs := make([]G.Value, len(in))
		for i, w := range in {
			d := denseOf(tensor.Float64, []float64{float64(i + 1)}, 1)
			switch w {
			case "a":
				a.own(d)
			case "b":
				b.own(d)
			}
			vs[i] = d
		}
		_, err := (addScalarsOp{n: len(vs)}).Do(vs...)
		wantErr(t, fmt.Sprint(in), err, "AddScalars: input "+fmt.Sprint(len(in)-1)+" is on another device than input")
	}
}
