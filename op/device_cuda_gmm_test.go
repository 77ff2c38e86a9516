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

// gmmGraphRun builds ids -> plan -> z = GroupedMatMul(xp, w) with dxp, dw from
// G.Backpropagate for the output gradient dz, binds the inputs (on the engine if e != nil)
// and returns host copies of z, dxp, dw.
func gmmGraphRun(t *testing.T, geo kernels.Geometry, H, N int, dt tensor.Dtype, in map[string][]float64, e *device.Engine) []*tensor.Dense {
	t.Helper()
	g := G.NewGraph()
	R := geo.Rows()
	ids := G.NewTensor(g, tensor.Int32, 2, G.WithShape(geo.T, geo.K), G.WithName("ids"))
	xp := G.NewTensor(g, dt, 2, G.WithShape(R, H), G.WithName("xp"))
	w := G.NewTensor(g, dt, 3, G.WithShape(geo.E, H, N), G.WithName("w"))
	dz := G.NewTensor(g, dt, 2, G.WithShape(R, N), G.WithName("dz"))
	p, err := op.NewPlan(ids, nil, geo)
	if err != nil {
		t.Fatal(err)
	}
	z, err := op.GroupedMatMul(xp, w, p)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Backpropagate(G.Nodes{z}, G.Nodes{dz}, G.Nodes{xp, w})
	if err != nil {
		t.Fatal(err)
	}
	letOn(t, e, ids, asTensor(in["ids"], tensor.Int32, geo.T, geo.K))
	letOn(t, e, xp, asTensor(in["xp"], dt, R, H))
	letOn(t, e, w, asTensor(in["w"], dt, geo.E, H, N))
	letOn(t, e, dz, asTensor(in["dz"], dt, R, N))
	return runOn(t, g, e, z, grads[0], grads[1])
}

// TestGroupedMatMulOnGPU runs the grouped matmul forward and both gradients on the GPU engine
// and on the CPU, in float32, float64 and bfloat16. The GPU (cuBLAS) sums in another order
// than the CPU (gonum), so each element must agree within tol·B, where B = Σ|a·b| is the same
// op run on the CPU on absolute values: tol 1e-5 for float32, 1e-12 for float64; bfloat16
// outputs may also differ by one bfloat16 ulp (2^-7 of the value). Rows that no expert owns
// and the weight gradient of an idle expert must be exactly 0 on both.
func TestGroupedMatMulOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(41, 42))
	for _, c := range []struct {
		name     string
		geo      kernels.Geometry
		H, N     int
		idleHalf bool // route only to experts [0, E/2)
	}{
		{"dropless", kernels.Geometry{T: 64, K: 2, E: 8, A: 1}, 32, 48, false},
		{"alignedOdd", kernels.Geometry{T: 33, K: 3, E: 5, A: 8}, 7, 9, false},
		{"idleExperts", kernels.Geometry{T: 40, K: 2, E: 12, A: 4}, 16, 8, true},
		{"capacityPad", kernels.Geometry{T: 96, K: 2, E: 6, A: 8, Mode: kernels.Capacity, C: 20, PadToCapacity: true}, 24, 16, false},
		{"capacityDrop", kernels.Geometry{T: 128, K: 2, E: 4, A: 1, Mode: kernels.Capacity, C: 40}, 16, 8, false},
	} {
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype} {
			t.Run(fmt.Sprintf("%s/%v", c.name, dt), func(t *testing.T) {
				geo := c.geo
				R := geo.Rows()
				in := map[string][]float64{}
				nE := geo.E
				if c.idleHalf {
					nE = geo.E / 2
				}
				ids := make([]float64, geo.T*geo.K)
				for tok := 0; tok < geo.T; tok++ {
					perm := rng.Perm(nE)
					for k := 0; k < geo.K; k++ {
						ids[tok*geo.K+k] = float64(perm[k])
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
				in["xp"], in["w"], in["dz"] = norm(R*c.H), norm(geo.E*c.H*c.N), norm(R*c.N)
				// bfloat16 inputs are rounded once here so that the float64 bound run sees the
				// same values.
				if dt == bfloat16.Dtype {
					for _, k := range []string{"xp", "w", "dz"} {
						for i, x := range in[k] {
							in[k][i] = bfloat16.FromFloat32(float32(x)).Float64()
						}
					}
				}
				abs := map[string][]float64{"ids": ids}
				for _, k := range []string{"xp", "w", "dz"} {
					abs[k] = make([]float64, len(in[k]))
					for i, x := range in[k] {
						abs[k][i] = math.Abs(x)
					}
				}
				cpu := gmmGraphRun(t, geo, c.H, c.N, dt, in, nil)
				gpu := gmmGraphRun(t, geo, c.H, c.N, dt, in, e)
				bound := gmmGraphRun(t, geo, c.H, c.N, tensor.Float64, abs, nil)
				tol := 1e-5
				if dt == tensor.Float64 {
					tol = 1e-12
				}
				for i, name := range []string{"z", "dxp", "dw"} {
					if gpu[i].Dtype() != dt || !gpu[i].Shape().Eq(cpu[i].Shape()) {
						t.Fatalf("%s: GPU %v %v, CPU %v %v", name, gpu[i].Dtype(), gpu[i].Shape(), cpu[i].Dtype(), cpu[i].Shape())
					}
					a, b, bd := floats(cpu[i]), floats(gpu[i]), floats(bound[i])
					for j := range a {
						if bd[j] == 0 {
							if a[j] != 0 || b[j] != 0 {
								t.Fatalf("%s[%d]: GPU %g, CPU %g, want exactly 0", name, j, b[j], a[j])
							}
							continue
						}
						lim := tol * bd[j]
						if dt == bfloat16.Dtype {
							lim += math.Abs(a[j]) / 128
						}
						if math.Abs(a[j]-b[j]) > lim || math.IsNaN(b[j]) {
							t.Fatalf("%s[%d]: GPU %.9g, CPU %.9g (bound %.3g, limit %.3g)", name, j, b[j], a[j], bd[j], lim)
						}
					}
				}
			})
		}
	}
}

// TestGroupedMatMulGPUErrors checks that the device path rejects what the kernels cannot do.
func TestGroupedMatMulGPUErrors(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	geo := kernels.Geometry{T: 4, K: 1, E: 2, A: 1}
	g := G.NewGraph()
	xp := G.NewTensor(g, tensor.Float32, 2, G.WithShape(geo.Rows(), 3), G.WithName("xp"))
	w := G.NewTensor(g, tensor.Float32, 3, G.WithShape(geo.E, 3, 2), G.WithName("w"))
	plan := G.NewTensor(g, tensor.Int32, 1, G.WithShape(geo.PlanLen()), G.WithName("plan"))
	if _, err := op.GroupedMatMul(xp, w, &op.Plan{Node: plan, Geometry: geo}); err != nil {
		t.Fatal(err)
	}
	flat := make([]float64, geo.PlanLen())
	for i := 0; i < geo.E; i++ {
		flat[i] = 2                    // counts
		flat[geo.E+i] = float64(2 * i) // offsets
	}
	flat[2*geo.E] = 4
	for i, v := range map[*G.Node]*tensor.Dense{
		xp:   asTensor(make([]float64, geo.Rows()*3), tensor.Float32, geo.Rows(), 3),
		w:    asTensor(make([]float64, geo.E*6), tensor.Float32, geo.E, 3, 2),
		plan: asTensor(flat, tensor.Int32, geo.PlanLen()),
	} {
		eng := e
		if i == w { // w stays on the host: a mix is an error
			eng = nil
		}
		letOn(t, eng, i, v)
	}
	vm := G.NewTapeMachine(g, G.WithEngine(e))
	defer vm.Close()
	if err := vm.RunAll(); err == nil {
		t.Fatal("host w with device xp and plan: no error")
	}
}
