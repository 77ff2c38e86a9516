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
// over the float32 operands' exact pieces) against the same graph in float64: the logits and dw
// (float32) within 2⁻¹⁹·B, B = Σ|a·b| (the float64 graph on absolute values), and dx (bfloat16)
// the bfloat16 rounding of a value that close to the float64 one; each output has the CPU's
// dtype and shape. With H = 1 each logit is one product of x and the router's pieces, exact
// but for the float32 sum of the three: there the bound is 2⁻²², which a piece left out (up to
// 2⁻¹⁷ of the product) would break. (A piece left out of a long sum hides in its rounding;
// kernels.TestCUDASplitGemm checks every form with k = 1.)
func TestMixedMatMulOnGPU(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	rng := rand.New(rand.NewPCG(51, 52))
	for _, c := range []struct{ T, H, E int }{{96, 64, 12}, {33, 40, 7}, {256, 512, 128}, {64, 1, 16}} {
		in := map[string][]float64{}
		for k, n := range map[string]int{"x": c.T * c.H, "w": c.H * c.E, "dlogits": c.T * c.E} {
			v := make([]float64, n)
			for i := range v {
				v[i] = rng.NormFloat64()
				if k == "x" { // rounded once here so that the float64 runs see the same values
					v[i] = bfloat16.FromFloat32(float32(v[i])).Float64()
				} else { // float32 inputs
					v[i] = float64(float32(v[i]))
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
		ref := mixedGraphRun(t, c.T, c.H, c.E, tensor.Float64, tensor.Float64, in, nil)
		bound := mixedGraphRun(t, c.T, c.H, c.E, tensor.Float64, tensor.Float64, abs, nil)
		for i, name := range []string{"logits", "dx", "dw"} {
			if gpu[i].Dtype() != cpu[i].Dtype() || !gpu[i].Shape().Eq(cpu[i].Shape()) {
				t.Fatalf("%v %s: GPU %v %v, CPU %v %v", c, name, gpu[i].Dtype(), gpu[i].Shape(), cpu[i].Dtype(), cpu[i].Shape())
			}
			tol := 0x1p-19
			if name == "logits" && c.H == 1 {
				tol = 0x1p-22
			}
			got, r, bd := floats(gpu[i]), floats(ref[i]), floats(bound[i])
			for j := range got {
				d := tol * bd[j]
				ok := math.Abs(got[j]-r[j]) <= d
				if name == "dx" { // between the roundings of the two ends of [r-d, r+d]
					lo := bfloat16.FromFloat32(float32(r[j] - d)).Float64()
					hi := bfloat16.FromFloat32(float32(r[j] + d)).Float64()
					ok = got[j] >= lo && got[j] <= hi
				}
				if !ok || math.IsNaN(got[j]) {
					t.Fatalf("%v %s[%d]: GPU %.9g, float64 %.9g (bound %.3g, tol %.3g)", c, name, j, got[j], r[j], bd[j], tol)
				}
			}
		}
	}
}
