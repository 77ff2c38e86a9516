//go:build gomoecuda

package op_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// devGraph is plan -> permute -> unpermute (weighted) plus the permuted probs, with the
// gradients of x and probs for given output gradients dy and dpp.
type devGraph struct {
	g                          *G.ExprGraph
	ids, probs, x, dy, dpp     *G.Node
	plan, y, pp, gradX, gradPr *G.Node
}

// probsDtype is the probs dtype for data of dtype dt: float32 for bfloat16 data.
func probsDtype(dt tensor.Dtype) tensor.Dtype {
	if dt == bfloat16.Dtype {
		return tensor.Float32
	}
	return dt
}

func buildDevGraph(t testing.TB, geo kernels.Geometry, H int, dt tensor.Dtype) *devGraph {
	t.Helper()
	g := G.NewGraph()
	d := &devGraph{g: g}
	R := geo.Rows()
	pdt := probsDtype(dt)
	d.ids = G.NewTensor(g, tensor.Int32, 2, G.WithShape(geo.T, geo.K), G.WithName("ids"))
	d.probs = G.NewTensor(g, pdt, 2, G.WithShape(geo.T, geo.K), G.WithName("probs"))
	d.x = G.NewTensor(g, dt, 2, G.WithShape(geo.T, H), G.WithName("x"))
	d.dy = G.NewTensor(g, dt, 2, G.WithShape(geo.T, H), G.WithName("dy"))
	d.dpp = G.NewTensor(g, pdt, 1, G.WithShape(R), G.WithName("dpp"))
	var planProbs *G.Node
	if geo.Mode == kernels.Capacity && geo.Drop == kernels.DropByProb {
		planProbs = d.probs
	}
	p, err := op.NewPlan(d.ids, planProbs, geo)
	if err != nil {
		t.Fatal(err)
	}
	d.plan = p.Node
	xp, err := op.Permute(d.x, p)
	if err != nil {
		t.Fatal(err)
	}
	if d.y, err = op.Unpermute(xp, d.probs, p); err != nil {
		t.Fatal(err)
	}
	if d.pp, err = op.PermuteProbs(d.probs, p); err != nil {
		t.Fatal(err)
	}
	grads, err := G.Backpropagate(G.Nodes{d.y, d.pp}, G.Nodes{d.dy, d.dpp}, G.Nodes{d.x, d.probs})
	if err != nil {
		t.Fatal(err)
	}
	d.gradX, d.gradPr = grads[0], grads[1]
	return d
}

func hostInputs(rng *rand.Rand, geo kernels.Geometry, H int) map[string][]float64 {
	in := map[string][]float64{}
	ids := make([]float64, geo.T*geo.K)
	for t := 0; t < geo.T; t++ {
		perm := rng.Perm(geo.E)
		for k := 0; k < geo.K; k++ {
			ids[t*geo.K+k] = float64(perm[k])
		}
	}
	in["ids"] = ids
	norm := func(n int) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		return v
	}
	pr := make([]float64, geo.T*geo.K)
	for i := range pr {
		pr[i] = float64(rng.IntN(16)) / 16 // ties for drop-by-prob
	}
	in["probs"] = pr
	in["x"] = norm(geo.T * H)
	in["dy"] = norm(geo.T * H)
	in["dpp"] = norm(geo.Rows())
	return in
}

func asTensor(v []float64, dt tensor.Dtype, shape ...int) *tensor.Dense {
	switch dt {
	case tensor.Int32:
		o := make([]int32, len(v))
		for i, x := range v {
			o[i] = int32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(o))
	case tensor.Float32:
		o := make([]float32, len(v))
		for i, x := range v {
			o[i] = float32(x)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(o))
	case bfloat16.Dtype:
		o := make([]bfloat16.BFloat16, len(v))
		for i, x := range v {
			o[i] = bfloat16.FromFloat32(float32(x))
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(o))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), v...)))
}

// runGraph binds the inputs (on the engine if e != nil), runs forward and backward and returns
// host copies of plan, y, pp, dx, dprobs.
func runGraph(t testing.TB, geo kernels.Geometry, H int, dt tensor.Dtype, in map[string][]float64, e *device.Engine) []*tensor.Dense {
	t.Helper()
	d := buildDevGraph(t, geo, H, dt)
	letOn(t, e, d.ids, asTensor(in["ids"], tensor.Int32, geo.T, geo.K))
	letOn(t, e, d.probs, asTensor(in["probs"], probsDtype(dt), geo.T, geo.K))
	letOn(t, e, d.x, asTensor(in["x"], dt, geo.T, H))
	letOn(t, e, d.dy, asTensor(in["dy"], dt, geo.T, H))
	letOn(t, e, d.dpp, asTensor(in["dpp"], probsDtype(dt), geo.Rows()))
	return runOn(t, d.g, e, d.plan, d.y, d.pp, d.gradX, d.gradPr)
}

// letOn sets the input n to v: on the host when e is nil, else to a device copy of v on e.
func letOn(t testing.TB, e *device.Engine, n *G.Node, v *tensor.Dense) {
	t.Helper()
	var val G.Value = v
	if e != nil {
		dv, err := e.CopyIn(v)
		if err != nil {
			t.Fatal(err)
		}
		val = dv
	}
	if err := G.Let(n, val); err != nil {
		t.Fatal(err)
	}
}

// runOn runs g once, on e when e is not nil, and returns host copies of the values of outs
// (which must live on the GPU when e is not nil); then it ends e's step.
func runOn(t testing.TB, g *G.ExprGraph, e *device.Engine, outs ...*G.Node) []*tensor.Dense {
	t.Helper()
	opts := []G.VMOpt{}
	if e != nil {
		opts = append(opts, G.WithEngine(e))
	}
	vm := G.NewTapeMachine(g, opts...)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		t.Fatal(err)
	}
	var out []*tensor.Dense
	for _, n := range outs {
		v := n.Value().(*tensor.Dense)
		if e != nil {
			if !e.Owns(v) {
				t.Fatalf("%s: value is not on the GPU", n.Name())
			}
			h, err := e.CopyOut(v)
			if err != nil {
				t.Fatalf("%s: %v", n.Name(), err)
			}
			v = h
		} else {
			v = v.Clone().(*tensor.Dense)
		}
		out = append(out, v)
	}
	if e != nil {
		e.EndStep()
	}
	return out
}

// runCPUAndGPU runs the graph cpu on the host and the graph gpu on e, once each, and checks
// e's status; both tape machines close when t ends.
func runCPUAndGPU(t testing.TB, e *device.Engine, cpu, gpu *G.ExprGraph) {
	t.Helper()
	mc := G.NewTapeMachine(cpu)
	t.Cleanup(func() { mc.Close() })
	mg := G.NewTapeMachine(gpu, G.WithEngine(e))
	t.Cleanup(func() { mg.Close() })
	if err := mc.RunAll(); err != nil {
		t.Fatal(err)
	}
	if err := mg.RunAll(); err != nil {
		t.Fatal(err)
	}
	if err := e.Status(); err != nil {
		t.Fatal(err)
	}
}

// mustOf returns must for building a graph in t: must(n, err) returns n and stops t on err.
func mustOf(t testing.TB) func(*G.Node, error) *G.Node {
	return func(n *G.Node, err error) *G.Node {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
}

// hostFloats returns a value (a scalar, or a tensor on the host or on e) as host float64s.
func hostFloats(t testing.TB, e *device.Engine, v G.Value) []float64 {
	t.Helper()
	d, ok := v.(*tensor.Dense)
	if !ok {
		return []float64{toF64(t, v.Data())}
	}
	if e != nil && e.Owns(d) {
		h, err := e.CopyOut(d)
		if err != nil {
			t.Fatal(err)
		}
		d = h
	}
	if d.Shape().IsScalar() {
		return []float64{toF64(t, d.Data())}
	}
	return floats(d)
}

// toF64 returns a float32 or float64 scalar as a float64.
func toF64(t testing.TB, v any) float64 {
	switch x := v.(type) {
	case float32:
		return float64(x)
	case float64:
		return x
	}
	t.Fatalf("scalar of %T", v)
	return 0
}

func floats(v *tensor.Dense) []float64 {
	switch x := v.Data().(type) {
	case []float32:
		o := make([]float64, len(x))
		for i, f := range x {
			o[i] = float64(f)
		}
		return o
	case []float64:
		return x
	case []int32:
		o := make([]float64, len(x))
		for i, f := range x {
			o[i] = float64(f)
		}
		return o
	case []bfloat16.BFloat16:
		o := make([]float64, len(x))
		for i, f := range x {
			o[i] = f.Float64()
		}
		return o
	}
	panic(fmt.Sprintf("%T", v.Data()))
}

// TestGraphOnGPU runs the same graph forward and backward on the CPU and on the GPU engine,
// in float32, float64 and bfloat16 (with float32 probs): the plan, y, pp and dx must be
// bitwise equal (for bfloat16 this checks that the CPU path, float32 kernels on widened data
// rounded once, gives the GPU's bits); dprobs (a float64 dot product summed in a different
// order, plus the permuted-probs gradient) within a small relative tolerance in float32 and
// float64, and bitwise in bfloat16 (summed in float32 in the same order on both sides,
// kernels.DotBF16).
func TestGraphOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range []struct {
		name string
		geo  kernels.Geometry
		H    int
	}{
		{"dropless", kernels.Geometry{T: 64, K: 2, E: 8, A: 4}, 32},
		{"oddH", kernels.Geometry{T: 33, K: 3, E: 5, A: 1}, 7},
		{"capacityProb", kernels.Geometry{T: 128, K: 2, E: 4, A: 1, Mode: kernels.Capacity, C: 40, Drop: kernels.DropByProb}, 16},
		{"capacityPosPad", kernels.Geometry{T: 96, K: 2, E: 6, A: 8, Mode: kernels.Capacity, C: 20, PadToCapacity: true}, 24},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				in := hostInputs(rng, c.geo, c.H)
				cpu := runGraph(t, c.geo, c.H, dt, in, nil)
				gpu := runGraph(t, c.geo, c.H, dt, in, e)
				names := []string{"plan", "y", "pp", "dx", "dprobs"}
				tol := 1e-5
				if dt == tensor.Float64 {
					tol = 1e-12
				}
				for i := range cpu {
					a, b := floats(cpu[i]), floats(gpu[i])
					if len(a) != len(b) {
						t.Fatalf("%s: %d vs %d elements", names[i], len(a), len(b))
					}
					for j := range a {
						bitwise := a[j] == b[j] || (math.IsNaN(a[j]) && math.IsNaN(b[j]))
						if names[i] == "dprobs" && dt != bfloat16.Dtype {
							if !(math.Abs(a[j]-b[j]) <= tol*(1+math.Abs(a[j]))) {
								t.Fatalf("dprobs[%d]: GPU %.17g, CPU %.17g", j, b[j], a[j])
							}
						} else if !bitwise {
							t.Fatalf("%s[%d]: GPU %.17g, CPU %.17g", names[i], j, b[j], a[j])
						}
					}
				}
			})
		}
	}
}
