//go:build gomoecuda

package train_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/train"
)

// valueGrad is a weight and its gradient as the solvers take them.
type valueGrad struct{ w, g *tensor.Dense }

func (v valueGrad) Value() G.Value         { return v.w }
func (v valueGrad) Grad() (G.Value, error) { return v.g, nil }

// TestClipGradNormGPUMixed: ClipGradNorm over float32, float64 and bfloat16 gradients in GPU
// memory and one on the host (the device's sums come to the host in one copy) gives the CPU's
// norm within float32 rounding and the CPU's clipped gradients within one rounding of each
// dtype; also with a float32 and a bfloat16 element of 3·10¹⁹, whose squares overflowed the
// GPU's float32 row sums (the norm was +Inf there and the step failed, where the CPU clipped).
func TestClipGradNormGPUMixed(t *testing.T) {
	for _, big := range []float64{0, 3e19} {
		t.Run(fmt.Sprintf("big=%g", big), func(t *testing.T) { clipGPUMixed(t, big) })
	}
}

func clipGPUMixed(t *testing.T, big float64) {
	eng := gpuEngine(t)
	rng := rand.New(rand.NewPCG(3, 4))
	dts := []tensor.Dtype{tensor.Float32, tensor.Float64, bfloat16.Dtype, tensor.Float32, tensor.Float64}
	sizes := []int{3000, 1025, 777, 1, 40}
	var onCPU, onGPU []G.ValueGrad
	for i, dt := range dts {
		vals := make([]float64, sizes[i])
		for j := range vals {
			vals[j] = rng.NormFloat64() * 0.1
		}
		if big != 0 && dt != tensor.Float64 && i < 3 {
			vals[len(vals)/2] = big
		}
		mk := func() *tensor.Dense {
			switch dt {
			case tensor.Float32:
				x := make([]float32, len(vals))
				for j, v := range vals {
					x[j] = float32(v)
				}
				return tensor.New(tensor.WithBacking(x))
			case tensor.Float64:
				return tensor.New(tensor.WithBacking(append([]float64(nil), vals...)))
			}
			x := make([]bfloat16.BFloat16, len(vals))
			for j, v := range vals {
				x[j] = bfloat16.FromFloat32(float32(v))
			}
			return tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(len(x)), tensor.WithBacking(x))
		}
		onCPU = append(onCPU, valueGrad{mk(), mk()})
		if i == len(dts)-1 { // the last one stays on the host in both lists
			onGPU = append(onGPU, valueGrad{mk(), mk()})
			continue
		}
		w, err := eng.CopyIn(mk())
		if err != nil {
			t.Fatal(err)
		}
		g, err := eng.CopyIn(mk())
		if err != nil {
			t.Fatal(err)
		}
		onGPU = append(onGPU, valueGrad{w, g})
	}
	const maxNorm = 0.5
	nc, err := train.ClipGradNorm(onCPU, maxNorm)
	if err != nil {
		t.Fatal(err)
	}
	ng, err := train.ClipGradNorm(onGPU, maxNorm)
	if err != nil {
		t.Fatal(err)
	}
	if !(nc > 2*maxNorm) || math.Abs(ng-nc) > 1e-6*nc {
		t.Fatalf("GPU norm %v, CPU norm %v (want both above %v, within 1e-6)", ng, nc, 2*maxNorm)
	}
	for i, dt := range dts {
		want := train.AsFloats(onCPU[i].(valueGrad).g)
		g := onGPU[i].(valueGrad).g
		if i < len(dts)-1 {
			if g, err = eng.CopyOut(g); err != nil {
				t.Fatal(err)
			}
		}
		got := train.AsFloats(g)
		tol := map[tensor.Dtype]float64{tensor.Float32: 2e-6, tensor.Float64: 2e-6, bfloat16.Dtype: 1.0 / 128}[dt]
		for j := range want {
			if !(math.Abs(got[j]-want[j]) <= tol*math.Abs(want[j])) {
				t.Fatalf("gradient %d (%v) element %d: GPU %v, CPU %v", i, dt, j, got[j], want[j])
			}
		}
	}
}
