//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/bfloat16"
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

// TestCUDAActivationsVectorPaths: the activations move 16 bytes at a time where every pointer
// is 16-byte aligned and one element at a time elsewhere; both give the same bits. bfloat16
// results match the float32 CPU kernel on the same (bfloat16) inputs within a bfloat16 rounding.
func TestCUDAActivationsVectorPaths(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 1031
	for _, d := range []DType{F32, BF16} {
		// a, b, dy: bufs[off][j] holds input j from element off on (off = 0: 16-byte aligned;
		// off = 1: one element past the base, so not aligned)
		var bufs [2][3]cuDevBuf
		f := make([][]float32, 3)
		for j, sc := range []float64{3, 1, 1} {
			v := trRand(rng, n, sc)
			if d == BF16 {
				for i := range v {
					v[i] = float64(bfloat16.FromFloat32(float32(v[i])).Float32())
				}
			}
			f[j] = f32s(v)
			bufs[0][j] = cuUploadAny(t, cuElems(d, v))
			bufs[1][j] = cuUploadAny(t, cuElems(d, append([]float64{0}, v...)))
		}
		out := cuAlloc(t, int64(d.Size()*(n+1)))
		yb := cuAlloc(t, int64(d.Size()*(n+1)))
		es := cu.DevicePtr(d.Size())
		read := func(o cuDevBuf, off int) []float64 {
			return asF64(cuWiden(cuDownloadAs(t, d, o, n+1)).([]float32))[off : off+n]
		}
		for _, kind := range []Activation{SwiGLU, GELU, Sigmoid} {
			var ref [][]float64 // aligned results: forward, then each input's gradient
			for _, off := range []int{0, 1} {
				p := func(j int) cu.DevicePtr { return bufs[off][j].p + es*cu.DevicePtr(off) }
				po, py := out.p+es*cu.DevicePtr(off), yb.p+es*cu.DevicePtr(off)
				cuMust(t, testCUDA.ActivationForward(d, kind, py, p(0), p(1), n))
				got := [][]float64{read(yb, off)}
				for w := 0; w < kind.Inputs(); w++ {
					cuMust(t, testCUDA.ActivationBackward(d, kind, w, po, p(0), p(1), py, p(2), n))
					got = append(got, read(out, off))
				}
				if off == 0 {
					ref = got
					// against the CPU (float32 on the same inputs)
					y := make([]float32, n)
					cuMust(t, ActivationForward(kind, y, f[0], f[1]))
					rel := map[DType]float64{F32: 2e-6, BF16: 8e-3}[d]
					trClose(t, kind.String()+" "+d.String()+" fwd", got[0], asF64(y), rel, 1e-6)
					continue
				}
				for j := range got {
					cuSameBits(t, fmt.Sprintf("%v %v result %d, misaligned against aligned", kind, d, j), got[j], ref[j])
				}
			}
		}
	}
}
