//go:build gomoecuda

package op_test

import (
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/op"
)

// mixedGraphRun builds logits = MixedMatMul(x, w) with dx, dw from G.Backpropagate for dlogits,
// binds the inputs (on the engine if e != nil) and returns host copies of logits, dx, dw. xdt
// is x's dtype, wdt that of w, the logits and dlogits.
func mixedGraphRun(t *testing.T, T, H, E int, xdt, wdt tensor.Dtype, in map[string][]float64, e *device.Engine) []*tensor.Dense {
	t.Helper()
	g := G.NewGraph()
	x := G.NewMatrix(g, xdt, G.WithShape(T, H), G.WithName("x"))
	w := G.NewMatrix(g, wdt, G.WithShape(H, E), G.WithName("w"))
	dl := G.NewMatrix(g, wdt, G.WithShape(T, E), G.WithName("dlogits"))
	logits, err := op.MixedMatMul(x, w, wdt)
	if err != nil {
		t.Fatal(err)
	}
	grads, err := G.Backpropagate(G.Nodes{logits}, G.Nodes{dl}, G.Nodes{x, w})
	if err != nil {
		t.Fatal(err)
	}
	letOn(t, e, x, asTensor(in["x"], xdt, T, H))
	letOn(t, e, w, asTensor(in["w"], wdt, H, E))
	letOn(t, e, dl, asTensor(in["dlogits"], wdt, T, E))
	return runOn(t, g, e, logits, grads[0], grads[1])
}

// TestMixedMatMulOnGPU: the bfloat16 layer's router product on the GPU (bfloat16 tensor cores
// over the float32 operands' exact pieces) against the CPU's float32 GEMM: the logits (float32),
// dx (bfloat16) and dw (float32) agree within 10⁻⁵·B, B = Σ|a·b| (the same graph in float64
// on absolute values), dx also within one bfloat16 step (2⁻⁷ of the value).
func TestMixedMatMulOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(51, 52))
	for _, c := range []struct{ T, H, E int }{{96, 64, 12}, {33, 40, 7}, {256, 512, 128}} {
		in := map[string][]float64{}
		for k, n := range map[string]int{"x": c.T * c.H, "w": c.H * c.E, "dlogits": c.T * c.E} {
			v := make([]float64, n)
			for i := range v {
				v[i] = rng.NormFloat64()
				if k == "x" { // rounded once here so that the bound run sees the same values
					v[i] = bfloat16.FromFloat32(float32(v[i])).Float64()
				}
			}
			in[k] = v
		}
		abs := map[string][]float64{}
		for k, v := range in {
			a := make([]float64, len(v))
			for i, x := range v {
				a[i] = math.Abs(x)
			}
			abs[k] = a
		}
		cpu := mixedGraphRun(t, c.T, c.H, c.E, bfloat16.Dtype, tensor.Float32, in, nil)
		gpu := mixedGraphRun(t, c.T, c.H, c.E, bfloat16.Dtype, tensor.Float32, in, e)
		bound := mixedGraphRun(t, c.T, c.H, c.E, tensor.Float64, tensor.Float64, abs, nil)
		for i, name := range []string{"logits", "dx", "dw"} {
			if gpu[i].Dtype() != cpu[i].Dtype() || !gpu[i].Shape().Eq(cpu[i].Shape()) {
				t.Fatalf("%v %s: GPU %v %v, CPU %v %v", c, name, gpu[i].Dtype(), gpu[i].Shape(), cpu[i].Dtype(), cpu[i].Shape())
			}
			a, b, bd := floats(cpu[i]), floats(gpu[i]), floats(bound[i])
			for j := range a {
				lim := 1e-5 * bd[j]
				if name == "dx" {
					lim += math.Abs(a[j]) / 128
				}
				if math.Abs(a[j]-b[j]) > lim || math.IsNaN(b[j]) {
					t.Fatalf("%v %s[%d]: GPU %.9g, CPU %.9g (bound %.3g, limit %.3g)", c, name, j, b[j], a[j], bd[j], lim)
				}
			}
		}
	}
}
