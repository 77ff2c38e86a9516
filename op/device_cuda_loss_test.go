//go:build gomoecuda

package op_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// lossGraph is the moe layer's losses as a cost: BalanceLoss over one sequence and over B,
// ZLoss, added with AddScalars, and G.Grad of the cost (seeded by gorgonia with a host
// scalar) wrt the scores and the logits.
type lossGraph struct {
	g           *G.ExprGraph
	ids, s, x   *G.Node
	outs        []*G.Node // l1, l2, l3, cost, ds, dx
	vals        []G.Value
	T, K, E, B  int
	names       []string
	bitwiseOuts []bool
}

func buildLossGraph(t *testing.T, dt tensor.Dtype, T, K, E, B int, seed uint64) *lossGraph {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	ids := make([]float64, T*K)
	for i := 0; i < T; i++ {
		p := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[i*K+k] = float64(p[k])
			if rng.IntN(13) == 0 {
				ids[i*K+k] = -1
			}
		}
	}
	sv, xv := make([]float64, T*E), make([]float64, T*E)
	for i := range sv {
		sv[i] = rng.Float64()
		xv[i] = rng.NormFloat64() * 3
	}
	l := &lossGraph{g: G.NewGraph(), T: T, K: K, E: E, B: B}
	l.ids = G.NewMatrix(l.g, tensor.Int32, G.WithShape(T, K), G.WithName("ids"), G.WithValue(asTensor(ids, tensor.Int32, T, K)))
	l.s = G.NewMatrix(l.g, dt, G.WithShape(T, E), G.WithName("s"), G.WithValue(asTensor(sv, dt, T, E)))
	l.x = G.NewMatrix(l.g, dt, G.WithShape(T, E), G.WithName("x"), G.WithValue(asTensor(xv, dt, T, E)))
	must := mustOf(t)
	l1 := must(op.BalanceLoss(l.ids, l.s, E, K, 1, 0.01))
	l2 := must(op.BalanceLoss(l.ids, l.s, E, K, B, 0.02))
	l3 := must(op.ZLoss(l.x, 0.001))
	cost := must(op.AddScalars(l1, l2, l3))
	grads, err := G.Grad(cost, l.s, l.x)
	if err != nil {
		t.Fatal(err)
	}
	l.outs = []*G.Node{l1, l2, l3, cost, grads[0], grads[1]}
	l.names = []string{"balance loss", "sequence balance loss", "z-loss", "cost", "dscores", "dlogits"}
	l.bitwiseOuts = []bool{true, true, false, false, true, false}
	l.vals = make([]G.Value, len(l.outs))
	for i, n := range l.outs {
		G.Read(n, &l.vals[i])
	}
	return l
}

// TestLossesOnGPU runs the losses' cost forward and backward on the CPU and on the GPU engine:
// the losses come back as 0-d device tensors, the balancing losses and their gradient equal
// the CPU bit for bit, the z-loss (CUDA's exp and log) and the cost within one float32 ulp
// (float32) or 1e-13 (float64).
func TestLossesOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	defer e.Close()
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, s := range [][4]int{{256, 4, 16, 4}, {4096, 8, 128, 8}, {100, 1, 3, 5}} {
			t.Run(fmt.Sprintf("%v/T%d K%d E%d B%d", dt, s[0], s[1], s[2], s[3]), func(t *testing.T) {
				rel := 2.4e-7
				if dt == tensor.Float64 {
					rel = 1e-13
				}
				cpu := buildLossGraph(t, dt, s[0], s[1], s[2], s[3], 7)
				gpu := buildLossGraph(t, dt, s[0], s[1], s[2], s[3], 7)
				if err := e.Bind(gpu.ids, gpu.s, gpu.x); err != nil {
					t.Fatal(err)
				}
				runCPUAndGPU(t, e, cpu.g, gpu.g)
				for i := range cpu.outs {
					d, ok := gpu.vals[i].(*tensor.Dense)
					if !ok || !e.Owns(d) {
						t.Fatalf("%s: GPU value is a %T, want a device tensor", cpu.names[i], gpu.vals[i])
					}
					if i < 4 && (d.Shape().Dims() != 0 || d.Dtype() != dt) {
						t.Fatalf("%s: GPU value is %v %v, want a %v tensor of scalar shape", cpu.names[i], d.Dtype(), d.Shape(), dt)
					}
					hg, hc := hostFloats(t, e, gpu.vals[i]), hostFloats(t, nil, cpu.vals[i])
					if len(hg) != len(hc) {
						t.Fatalf("%s: %d values on the GPU, %d on the CPU", cpu.names[i], len(hg), len(hc))
					}
					for j := range hc {
						if cpu.bitwiseOuts[i] {
							if math.Float64bits(hg[j]) != math.Float64bits(hc[j]) {
								t.Fatalf("%s[%d]: GPU %.17g, CPU %.17g (want the same bits)", cpu.names[i], j, hg[j], hc[j])
							}
						} else if d := math.Abs(hg[j] - hc[j]); d > rel*math.Abs(hc[j]) {
							t.Fatalf("%s[%d]: GPU %.17g, CPU %.17g (rel diff %g > %g)", cpu.names[i], j, hg[j], hc[j], d/math.Abs(hc[j]), rel)
						}
					}
				}
				e.EndStep()
			})
		}
	}
}

// TestRouterBalanceLossOnGPU: op.RouterBalanceLoss (both score functions, one sequence and
// several) forward and backward on the GPU engine against the CPU: the losses within 1e-6
// relative (float32; 1e-13 float64), the logits' gradient within 1e-4 (1e-12) of its largest
// element (CUDA's exp is not Go's, and the row sums cancel in the gradient).
func TestRouterBalanceLossOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	defer e.Close()
	build := func(dt tensor.Dtype, T, K, E, B int, score kernels.RouterScore) (*lossGraph, []G.Value) {
		l := buildLossGraph(t, dt, T, K, E, B, 11)
		must := mustOf(t)
		l1 := must(op.RouterBalanceLoss(l.ids, l.x, E, K, 1, 0.01, score))
		l2 := must(op.RouterBalanceLoss(l.ids, l.x, E, K, B, 0.02, score))
		cost := must(op.AddScalars(l1, l2))
		grads, err := G.Grad(cost, l.x)
		if err != nil {
			t.Fatal(err)
		}
		outs := []*G.Node{l1, l2, grads[0]}
		vals := make([]G.Value, len(outs))
		for i, n := range outs {
			G.Read(n, &vals[i])
		}
		return l, vals
	}
	for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
		for _, score := range []kernels.RouterScore{kernels.RouterSoftmax, kernels.RouterSigmoid} {
			for _, s := range [][4]int{{256, 4, 16, 4}, {4096, 8, 128, 8}, {100, 1, 3, 5}} {
				t.Run(fmt.Sprintf("%v/%v/T%d K%d E%d B%d", dt, score, s[0], s[1], s[2], s[3]), func(t *testing.T) {
					rel, norm := 1e-6, 1e-4
					if dt == tensor.Float64 {
						rel, norm = 1e-13, 1e-12
					}
					cl, cv := build(dt, s[0], s[1], s[2], s[3], score)
					gl, gv := build(dt, s[0], s[1], s[2], s[3], score)
					if err := e.Bind(gl.ids, gl.s, gl.x); err != nil {
						t.Fatal(err)
					}
					runCPUAndGPU(t, e, cl.g, gl.g)
					for i := range cv {
						hg, hc := hostFloats(t, e, gv[i]), hostFloats(t, nil, cv[i])
						big := 0.0
						for _, v := range hc {
							big = max(big, math.Abs(v))
						}
						for j := range hc {
							tol := norm * big
							if i < 2 {
								tol = rel * math.Abs(hc[j])
							}
							if d := math.Abs(hg[j] - hc[j]); !(d <= tol) {
								t.Fatalf("output %d [%d]: GPU %.17g, CPU %.17g (diff %g > %g)", i, j, hg[j], hc[j], d, tol)
							}
						}
					}
					e.EndStep()
				})
			}
		}
	}
}
