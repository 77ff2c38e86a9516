//go:build gomoecuda

package device_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// The matmul tests compare cuBLAS with float64 loops on the same (rounded) inputs. Each
// element must agree within tol·Σ|a·b|: 1e-5 for float32 (no TF32), 1e-12 for float64, and for
// bfloat16 (float32 accumulation, output rounded once) 8e-3.

func mmTol(dt tensor.Dtype) float64 {
	switch dt {
	case tensor.Float64:
		return 1e-12
	case tensor.Float32:
		return 1e-5
	}
	return 8e-3
}

// mmHost makes a host tensor of dtype dt from float64 values and returns the values it holds.
func mmHost(dt tensor.Dtype, v []float64, shape ...int) (*tensor.Dense, []float64) {
	held := make([]float64, len(v))
	var back any
	switch dt {
	case tensor.Float32:
		o := make([]float32, len(v))
		for i, x := range v {
			o[i] = float32(x)
			held[i] = float64(o[i])
		}
		back = o
	case tensor.Float64:
		o := append([]float64(nil), v...)
		copy(held, o)
		back = o
	default:
		o := make([]bfloat16.BFloat16, len(v))
		for i, x := range v {
			o[i] = bfloat16.FromFloat32(float32(x))
			held[i] = o[i].Float64()
		}
		back = o
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(back)), held
}

func mmValues(t *testing.T, d *tensor.Dense) []float64 {
	t.Helper()
	switch x := d.Data().(type) {
	case []float32:
		o := make([]float64, len(x))
		for i, v := range x {
			o[i] = float64(v)
		}
		return o
	case []float64:
		return x
	case []bfloat16.BFloat16:
		o := make([]float64, len(x))
		for i, v := range x {
			o[i] = v.Float64()
		}
		return o
	}
	t.Fatalf("data of type %T", d.Data())
	return nil
}

// mmRef is C [m,n] = op(A)·op(B) for row-major A ([m,k], or [k,m] if ta) and B ([k,n], or
// [n,k] if tb), with the bound Σ|a·b| of each element.
func mmRef(ta, tb bool, m, n, k int, a, b []float64) (c, bound []float64) {
	c, bound = make([]float64, m*n), make([]float64, m*n)
	for i := 0; i < m; i++ {
		for j := 0; j < n; j++ {
			for l := 0; l < k; l++ {
				av, bv := a[i*k+l], b[l*n+j]
				if ta {
					av = a[l*m+i]
				}
				if tb {
					bv = b[j*k+l]
				}
				c[i*n+j] += av * bv
				bound[i*n+j] += math.Abs(av * bv)
			}
		}
	}
	return c, bound
}

func mmCheck(t *testing.T, what string, got, want, bound []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol*bound[i] || math.IsNaN(got[i]) {
			t.Fatalf("%s: element %d = %.9g, want %.9g (bound %.3g, tol %.1g)", what, i, got[i], want[i], bound[i], tol)
		}
	}
}

func TestMatMul(t *testing.T) {
	e := newEngine(t)
	rng := rand.New(rand.NewPCG(51, 52))
	norm := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		return v
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype} {
		for _, sz := range [][3]int{{1, 3, 5}, {33, 17, 9}, {4, 1, 6}, {64, 80, 48}} {
			for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
				m, n, k := sz[0], sz[1], sz[2]
				t.Run(fmt.Sprintf("%v/%dx%dx%d/ta=%v,tb=%v", dt, m, n, k, tr[0], tr[1]), func(t *testing.T) {
					// Stored shapes; a transposed operand is a .T() view of its stored matrix,
					// as Gorgonia makes it.
					as, bs := []int{m, k}, []int{k, n}
					if tr[0] {
						as = []int{k, m}
					}
					if tr[1] {
						bs = []int{n, k}
					}
					ah, av := mmHost(dt, norm(m*k), as...)
					bh, bv := mmHost(dt, norm(k*n), bs...)
					a, err := e.CopyIn(ah)
					if err != nil {
						t.Fatal(err)
					}
					b, err := e.CopyIn(bh)
					if err != nil {
						t.Fatal(err)
					}
					if tr[0] {
						if err := a.T(); err != nil {
							t.Fatal(err)
						}
					}
					if tr[1] {
						if err := b.T(); err != nil {
							t.Fatal(err)
						}
					}
					want, bound := mmRef(tr[0], tr[1], m, n, k, av, bv)

					// 1. Gorgonia's path: a host preallocated output is rebacked to the device.
					pre := tensor.New(tensor.Of(dt), tensor.WithShape(m, n))
					if err := e.MatMul(a, b, pre); err != nil {
						t.Fatal(err)
					}
					if !e.Owns(pre) {
						t.Fatal("the host output was not moved to the device")
					}
					got, err := e.CopyOut(pre)
					if err != nil {
						t.Fatal(err)
					}
					mmCheck(t, "MatMul into a host prealloc", mmValues(t, got), want, bound, mmTol(dt))

					// 2. tensor.MatMul with no output: the engine allocates it.
					out, err := tensor.MatMul(a, b)
					if err != nil {
						t.Fatal(err)
					}
					if !e.Owns(out) {
						t.Fatal("tensor.MatMul result is not on the device")
					}
					got, err = e.CopyOut(out)
					if err != nil {
						t.Fatal(err)
					}
					mmCheck(t, "tensor.MatMul", mmValues(t, got), want, bound, mmTol(dt))
				})
			}
		}
	}
	e.EndStep()
}

func TestMatVecMul(t *testing.T) {
	e := newEngine(t)
	rng := rand.New(rand.NewPCG(53, 54))
	const m, k = 37, 19
	av, bv := make([]float64, m*k), make([]float64, k)
	for i := range av {
		av[i] = rng.NormFloat64()
	}
	for i := range bv {
		bv[i] = rng.NormFloat64()
	}
	for _, trans := range []bool{false, true} {
		ah, a64 := mmHost(tensor.Float32, av, m, k)
		if trans {
			ah, a64 = mmHost(tensor.Float32, av, k, m)
		}
		bh, b64 := mmHost(tensor.Float32, bv, k)
		a, _ := e.CopyIn(ah)
		b, _ := e.CopyIn(bh)
		if trans {
			if err := a.T(); err != nil {
				t.Fatal(err)
			}
		}
		out, err := tensor.MatVecMul(a, b)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Owns(out) {
			t.Fatal("MatVecMul result is not on the device")
		}
		got, err := e.CopyOut(out)
		if err != nil {
			t.Fatal(err)
		}
		want, bound := mmRef(trans, false, m, 1, k, a64, b64)
		mmCheck(t, fmt.Sprintf("MatVecMul (transposed %v)", trans), mmValues(t, got), want, bound, 1e-5)
	}
}

func TestMatMulErrors(t *testing.T) {
	e := newEngine(t)
	f32 := func(shape ...int) *tensor.Dense {
		d, err := e.NewTensor(tensor.Float32, shape...)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, b := f32(4, 3), f32(3, 5)
	host := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(3, 5))
	f64, _ := e.NewTensor(tensor.Float64, 3, 5)
	wide := f32(4, 6)
	col, err := wide.Slice(nil, tensor.S(0, 3)) // a [4,3] view with row stride 6
	if err != nil {
		t.Fatal(err)
	}
	// An output on another engine is refused: it used to be rebacked with this engine's
	// memory, as a host output is, leaving the other engine's block behind it.
	other, err := newEngine(t).NewTensor(tensor.Float32, 4, 5)
	if err != nil {
		t.Fatal(err)
	}
	otherMem := other.Uintptr()
	for _, c := range []struct {
		name    string
		a, b, p tensor.Tensor
		frag    string
	}{
		{"shapes", a, f32(4, 5), f32(4, 5), "do not multiply"},
		{"host operand", a, host, f32(4, 5), "not on this engine"},
		{"dtype", a, f64, f32(4, 5), "dtype"},
		{"output shape", a, b, f32(5, 4), "output has shape"},
		{"output size", a, b, f32(4, 4), "output has shape"},
		{"column slice", col, b, f32(4, 5), "neither row-major nor a transposed view"},
		{"nil", a, nil, f32(4, 5), "nil"},
		{"output on another engine", a, b, other, "another engine"},
	} {
		err := e.MatMul(c.a, c.b, c.p)
		if err == nil || !strings.Contains(err.Error(), c.frag) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.frag)
		}
	}
	if other.Uintptr() != otherMem {
		t.Errorf("the refused output moved from %#x to %#x", otherMem, other.Uintptr())
	}
}

// TestMatMulGraph runs y = x·W and its gradients (G.Backpropagate for an output gradient dy)
// in a Gorgonia graph on the tape machine with the engine: every value must stay on the
// device and equal the float64 loops within the float32/float64 tolerances.
func TestMatMulGraph(t *testing.T) {
	e := newEngine(t)
	rng := rand.New(rand.NewPCG(55, 56))
	const m, k, n = 24, 13, 17
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		t.Run(dt.String(), func(t *testing.T) {
			g := G.NewGraph()
			x := G.NewMatrix(g, dt, G.WithShape(m, k), G.WithName("x"))
			w := G.NewMatrix(g, dt, G.WithShape(k, n), G.WithName("W"))
			dy := G.NewMatrix(g, dt, G.WithShape(m, n), G.WithName("dy"))
			y, err := G.Mul(x, w)
			if err != nil {
				t.Fatal(err)
			}
			grads, err := G.Backpropagate(G.Nodes{y}, G.Nodes{dy}, G.Nodes{x, w})
			if err != nil {
				t.Fatal(err)
			}
			vals := map[string][]float64{}
			for _, in := range []struct {
				n     *G.Node
				shape []int
			}{{x, []int{m, k}}, {w, []int{k, n}}, {dy, []int{m, n}}} {
				v := make([]float64, in.shape[0]*in.shape[1])
				for i := range v {
					v[i] = rng.NormFloat64()
				}
				h, held := mmHost(dt, v, in.shape...)
				vals[in.n.Name()] = held
				d, err := e.CopyIn(h)
				if err != nil {
					t.Fatal(err)
				}
				if err := G.Let(in.n, d); err != nil {
					t.Fatal(err)
				}
			}
			vm := G.NewTapeMachine(g, G.WithEngine(e))
			defer vm.Close()
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			wy, by := mmRef(false, false, m, n, k, vals["x"], vals["W"])
			wdx, bdx := mmRef(false, true, m, k, n, vals["dy"], vals["W"]) // dy·Wᵀ
			wdw, bdw := mmRef(true, false, k, n, m, vals["x"], vals["dy"]) // xᵀ·dy
			for _, c := range []struct {
				name        string
				n           *G.Node
				want, bound []float64
			}{{"y", y, wy, by}, {"dx", grads[0], wdx, bdx}, {"dW", grads[1], wdw, bdw}} {
				v, ok := c.n.Value().(*tensor.Dense)
				if !ok || !e.Owns(v) {
					t.Fatalf("%s is not a device tensor (%T)", c.name, c.n.Value())
				}
				h, err := e.CopyOut(v)
				if err != nil {
					t.Fatal(err)
				}
				mmCheck(t, c.name, mmValues(t, h), c.want, c.bound, mmTol(dt))
			}
			e.EndStep()
		})
	}
}
