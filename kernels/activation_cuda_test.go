//go:build gomoecuda

package kernels_test

import (
	"math/rand/v2"
	"testing"

	. "github.com/gomoe/gomoe/kernels"
)

// The GPU kernels against their CPU twins: the activations within a few ulps (CUDA's expf/tanhf against
// Go's float64 math).

func TestCUDAActivations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 10007
	a, b, dy := trRand(rng, n, 3), trRand(rng, n, 1), trRand(rng, n, 1)
	for _, kind := range []Activation{SwiGLU, GELU, Sigmoid} {
		// float32
		{
			A, B, DY := f32s(a), f32s(b), f32s(dy)
			y := make([]float32, n)
			cuMust(t, ActivationForward(kind, y, A, B))
			bA, bB, bY, bDY := cuUpload(t, A), cuUpload(t, B), cuUpload(t, y), cuUpload(t, DY)
			out := cuAlloc(t, 4*n)
			cuMust(t, testCUDA.ActivationForward(F32, kind, out.p, bA.p, bB.p, n))
			trClose(t, kind.String()+" f32 fwd", asF64(cuDownload[float32](t, out, n)), asF64(y), 2e-6, 1e-6)
			for w := 0; w < kind.Inputs(); w++ {
				g := make([]float32, n)
				cuMust(t, ActivationBackward(kind, w, g, A, B, y, DY))
				cuMust(t, testCUDA.ActivationBackward(F32, kind, w, out.p, bA.p, bB.p, bY.p, bDY.p, n))
				// GELU's derivative cancels (1 + tanh ≈ 0) for large negative inputs: the
				// float32 GPU result is off by up to a few float32 ulps of 1 there.
				trClose(t, kind.String()+" f32 bwd", asF64(cuDownload[float32](t, out, n)), asF64(g), 1e-5, 1e-5)
			}
		}
		// float64
		{
			y := make([]float64, n)
			cuMust(t, ActivationForward(kind, y, a, b))
			da, dbb, yb, ydy := cuUpload(t, a), cuUpload(t, b), cuUpload(t, y), cuUpload(t, dy)
			out := cuAlloc(t, 8*n)
			cuMust(t, testCUDA.ActivationForward(F64, kind, out.p, da.p, dbb.p, n))
			trClose(t, kind.String()+" f64 fwd", cuDownload[float64](t, out, n), y, 1e-14, 1e-15)
			for w := 0; w < kind.Inputs(); w++ {
				g := make([]float64, n)
				cuMust(t, ActivationBackward(kind, w, g, a, b, y, dy))
				cuMust(t, testCUDA.ActivationBackward(F64, kind, w, out.p, da.p, dbb.p, yb.p, ydy.p, n))
				trClose(t, kind.String()+" f64 bwd", cuDownload[float64](t, out, n), g, 1e-13, 1e-13)
			}
		}
	}
}
