package op

import (
	"fmt"
	"math"
	"math/rand"
	"slices"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestMatMulHostForms: the host path (kernels.Gemm) of all four transposition forms in
// float32 and float64 at odd sizes, against float64 loops; a transposed view (copied to plain
// rows first, TestMatMulStridedView) gives the same values.
func TestMatMulHostForms(t *testing.T) {
	rng := rand.New(rand.NewSource(21))
	for _, s := range [][3]int{{1, 1, 1}, {7, 17, 5}, {33, 9, 300}, {70, 65, 40}} {
		m, n, k := s[0], s[1], s[2]
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			for _, op := range []matMulOp{{}, {ta: true}, {tb: true}, {ta: true, tb: true}} {
				ar, ac, br, bc := m, k, k, n
				if op.ta {
					ar, ac = k, m
				}
				if op.tb {
					br, bc = n, k
				}
				a, b := gcRand(rng, ar*ac), gcRand(rng, br*bc)
				c, err := op.Do(gcDense(dt, tensor.Shape{ar, ac}, a), gcDense(dt, tensor.Shape{br, bc}, b))
				if err != nil {
					t.Fatal(err)
				}
				if !c.Shape().Eq(tensor.Shape{m, n}) {
					t.Fatalf("%v %v: shape %v", s, op, c.Shape())
				}
				got := gcFloats(c)
				tol := 1e-12
				if dt == tensor.Float32 {
					tol = 1e-5
				}
				for i := 0; i < m; i++ {
					for j := 0; j < n; j++ {
						var want float64
						for p := 0; p < k; p++ {
							ai, bi := i*ac+p, p*bc+j
							if op.ta {
								ai = p*ac + i
							}
							if op.tb {
								bi = j*bc + p
							}
							av, bv := a[ai], b[bi]
							want += av * bv
						}
						if !(math.Abs(got[i*n+j]-want) <= tol*float64(k)) {
							t.Fatalf("%v %v %v: c[%d,%d] = %v, want %v", s, dt, op, i, j, got[i*n+j], want)
						}
					}
				}
			}
		}
	}
	// A transposed view of a [4,3] matrix as a [3,4] operand takes tensor.MatMul; the engine
	// with ta on the stored matrix must agree.
	d := gcRand(rng, 12)
	at := gcDense(tensor.Float64, tensor.Shape{4, 3}, d)
	if err := at.T(); err != nil {
		t.Fatal(err)
	}
	b := gcDense(tensor.Float64, tensor.Shape{4, 2}, gcRand(rng, 8))
	viaView, err := matMulOp{}.Do(at, b)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := matMulOp{ta: true}.Do(gcDense(tensor.Float64, tensor.Shape{4, 3}, d), b)
	if err != nil {
		t.Fatal(err)
	}
	g1, g2 := gcFloats(viaView), gcFloats(direct)
	if len(g1) != 6 || len(g2) != 6 {
		t.Fatalf("sizes %d and %d, want 6", len(g1), len(g2))
	}
	for i := range g1 {
		if !(math.Abs(g1[i]-g2[i]) <= 1e-12) {
			t.Fatalf("[%d]: view %v, engine %v", i, g1[i], g2[i])
		}
	}
}

func TestMatMul(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	a, b := gcRand(rng, 3*4), gcRand(rng, 4*5)
	gcRun(t, gcCase{name: "MatMul", inputs: []gcInput{{"a", tensor.Shape{3, 4}, a}, {"b", tensor.Shape{4, 5}, b}}, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
		y, err := MatMul(in[0], in[1])
		if err != nil {
			return nil, err
		}
		// a second product through the transposed gradient paths
		y2, err := MatMul(y, G.NewMatrix(g, dt, G.WithShape(5, 2), G.WithName("c"), G.WithValue(gcDense(dt, tensor.Shape{5, 2}, gcRand(rand.New(rand.NewSource(9)), 10)))))
		if err != nil {
			return nil, err
		}
		return gcWeighted(g, dt, y2, "w_mm", 10)
	}})
	g, bn := checkProduct345(t, a, b, func(a, b *G.Node) (*G.Node, error) { return MatMul(a, b) })
	for _, c := range []struct {
		name string
		a, b *G.Node
	}{{"nil", nil, bn}, {"inner", bn, bn}, {"vector", G.NewVector(g, tensor.Float64, G.WithShape(4), G.WithName("v")), bn}} {
		if _, err := MatMul(c.a, c.b); err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
}

// checkProduct345 runs mul on a [3,4] and b [4,5] in float64 and checks the product against a
// plain loop; it returns the graph and b's node.
func checkProduct345(t *testing.T, a, b []float64, mul func(a, b *G.Node) (*G.Node, error)) (*G.ExprGraph, *G.Node) {
	t.Helper()
	g := G.NewGraph()
	an := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 4), G.WithName("a"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{3, 4}, a)))
	bn := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 5), G.WithName("b"), G.WithValue(gcDense(tensor.Float64, tensor.Shape{4, 5}, b)))
	got := gcFloats(runRead(t, g, must(mul(an, bn)))[0])
	for i := 0; i < 3; i++ {
		for j := 0; j < 5; j++ {
			var s float64
			for k := 0; k < 4; k++ {
				s += a[i*4+k] * b[k*5+j]
			}
			if !(math.Abs(got[i*5+j]-s) <= 1e-12) {
				t.Fatalf("c[%d,%d] = %v, want %v", i, j, got[i*5+j], s)
			}
		}
	}
	return g, bn
}

// TestMatMulTransposedGradients: the gradients of every transposition form of MatMul and
// MixedMatMul (the forms their own gradients are made of, which TestMatMul and
// TestMixedMatMul only run forward) against float64 central differences, through SymDiff and
// DoDiff. op(a) [3,4] · op(b) [4,2], each operand stored transposed when its flag is set.
func TestMatMulTransposedGradients(t *testing.T) {
	const M, K, N = 3, 4, 2
	rng := rand.New(rand.NewSource(31))
	for _, ta := range []bool{false, true} {
		for _, tb := range []bool{false, true} {
			as, bs := tensor.Shape{M, K}, tensor.Shape{K, N}
			if ta {
				as = tensor.Shape{K, M}
			}
			if tb {
				bs = tensor.Shape{N, K}
			}
			a, b := gcRand(rng, M*K), gcRand(rng, K*N)
			for _, mixed := range []bool{false, true} {
				name := fmt.Sprintf("MatMul ta=%v tb=%v", ta, tb)
				if mixed {
					name = "Mixed" + name
				}
				gcRun(t, gcCase{name: name, inputs: []gcInput{{"a", as, a}, {"b", bs, b}}, build: func(g *G.ExprGraph, dt tensor.Dtype, in []*G.Node) (*G.Node, error) {
					var op G.Op = matMulOp{ta: ta, tb: tb}
					if mixed {
						op = mixedMatMulOp{ta: ta, tb: tb, a: dt, b: dt, out: dt}
					}
					y, err := G.ApplyOp(op, in[0], in[1])
					if err != nil {
						return nil, err
					}
					if !y.Shape().Eq(tensor.Shape{M, N}) {
						return nil, fmt.Errorf("%v: shape %v, want (%d, %d)", op, y.Shape(), M, N)
					}
					return gcWeighted(g, dt, G.Must(G.Square(y)), "w_t", 32)
				}})
			}
		}
	}
}

// TestMatMulStridedView: an input whose value is a strided host view (a column slice of a
// [2,3] matrix bound with G.Let: [[1,2],[4,5]] with rows 3 apart) multiplies as its elements,
// not as its backing array read from the view's offset (which gave [1 2 3 4] and a gradient of
// [4 4 6 6]), in MatMul and in float64 MixedMatMul (which runs MatMul), as a and as b.
func TestMatMulStridedView(t *testing.T) {
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, mixed := range []bool{false, true} {
			for _, viewIsB := range []bool{false, true} {
				if mixed && dt != tensor.Float64 {
					continue
				}
				back := denseOf(dt, []float64{1, 2, 3, 4, 5, 6}, 2, 3)
				sv, err := back.Slice(nil, G.S(0, 2))
				if err != nil {
					t.Fatal(err)
				}
				g := G.NewGraph()
				v := G.NewMatrix(g, dt, G.WithShape(2, 2), G.WithName("v"))
				if err := G.Let(v, sv); err != nil {
					t.Fatal(err)
				}
				id := G.NewMatrix(g, dt, G.WithShape(2, 2), G.WithName("id"), G.WithValue(denseOf(dt, []float64{1, 0, 0, 1}, 2, 2)))
				a, b := v, id
				if viewIsB {
					a, b = id, v
				}
				var c *G.Node
				if mixed {
					c, err = MixedMatMul(a, b, dt)
				} else {
					c, err = MatMul(a, b)
				}
				if err != nil {
					t.Fatal(err)
				}
				cost, err := G.Sum(c)
				if err != nil {
					t.Fatal(err)
				}
				grads, err := G.Grad(cost, id)
				if err != nil {
					t.Fatal(err)
				}
				var cv, gv G.Value
				G.Read(c, &cv)
				G.Read(grads[0], &gv)
				m := G.NewTapeMachine(g)
				if err := m.RunAll(); err != nil {
					m.Close()
					t.Fatal(err)
				}
				m.Close()
				// c = v (either side of the identity); d Σc / d id = vᵀ·1 (id on the right) or
				// 1·vᵀ (id on the left).
				want, wantG := []float64{1, 2, 4, 5}, []float64{5, 5, 7, 7}
				if viewIsB {
					wantG = []float64{3, 9, 3, 9}
				}
				if got, gotG := toF64(t, cv), toF64(t, gv); !slices.Equal(got, want) || !slices.Equal(gotG, wantG) {
					t.Errorf("%v mixed=%v view is b=%v: c = %v (want %v), dΣc/d id = %v (want %v)", dt, mixed, viewIsB, got, want, gotG, wantG)
				}
			}
		}
	}
}

// TestMatMulDoEmptyValues: the Do of MatMul and MixedMatMul, in every transposition form,
// called with an empty matrix (a size of 0 that the node functions refuse) returns an error
// that names the op and the shapes; it used to panic (tensor.MatMul indexing an empty slice,
// gonum's "bad leading dimension", kernels.Gemm's operands).
func TestMatMulDoEmptyValues(t *testing.T) {
	empty := func(dt tensor.Dtype, r, c int) *tensor.Dense {
		return tensor.New(tensor.Of(dt), tensor.WithShape(r, c))
	}
	full := func(dt tensor.Dtype, r, c int) *tensor.Dense {
		if dt == tensor.Float32 {
			return tensor.New(tensor.WithShape(r, c), tensor.WithBacking(make([]float32, r*c)))
		}
		return tensor.New(tensor.WithShape(r, c), tensor.WithBacking(make([]float64, r*c)))
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
			ops := []G.Op{matMulOp{ta: tr[0], tb: tr[1]}, mixedMatMulOp{ta: tr[0], tb: tr[1], a: dt, b: dt, out: dt}}
			// op(a) [M,K] · op(b) [K,N] with one of M, K, N zero.
			for _, mkn := range [][3]int{{0, 4, 5}, {3, 0, 5}, {3, 4, 0}} {
				M, K, N := mkn[0], mkn[1], mkn[2]
				as := [2]int{M, K}
				if tr[0] {
					as = [2]int{K, M}
				}
				bs := [2]int{K, N}
				if tr[1] {
					bs = [2]int{N, K}
				}
				mk := func(s [2]int) *tensor.Dense {
					if s[0]*s[1] == 0 {
						return empty(dt, s[0], s[1])
					}
					return full(dt, s[0], s[1])
				}
				for _, op := range ops {
					err := func() (err error) {
						defer func() {
							if r := recover(); r != nil {
								err = fmt.Errorf("panic: %v", r)
							}
						}()
						_, err = op.Do(mk(as), mk(bs))
						return err
					}()
					if err == nil || strings.HasPrefix(err.Error(), "panic") || !strings.Contains(err.Error(), "every size must be >= 1") {
						t.Errorf("%v %v, a %v, b %v: %v, want an error about the empty matrix", op, dt, as, bs, err)
					}
				}
			}
		}
	}
}
