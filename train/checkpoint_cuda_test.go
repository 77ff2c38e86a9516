//go:build gomoecuda

package train_test

import (
	"math"
	"path/filepath"
	"testing"

	gdev "github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/train"
)

func gpuEngine(t *testing.T) *gdev.Engine {
	t.Helper()
	e, err := gdev.New(0)
	if err != nil {
		t.Skipf("no GPU: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return e
}

// TestResumeIsBitwiseGPU: on the GPU (weights, moments and bfloat16 masters in device memory),
// N steps straight against k steps, SaveCheckpoint (copied out through the engine), a fresh
// graph and solver, LoadCheckpoint (copied in) and N−k steps: every loss and every weight is
// bitwise equal. Then the GPU checkpoint loads into a CPU model with the GPU's weights, bit
// for bit, and a CPU checkpoint loads into a GPU model.
func TestResumeIsBitwiseGPU(t *testing.T) {
	const N, k = 8, 3
	for _, c := range resumeCases {
		if c.bias {
			continue // UpdateExpertBias is a host update
		}
		t.Run(c.name, func(t *testing.T) {
			eng := gpuEngine(t)
			ref := newTinyModel(t, c, eng)
			defer ref.vm.Close()
			want := ref.steps(t, c, 0, N)

			a := newTinyModel(t, c, eng)
			got := a.steps(t, c, 0, k)
			path := filepath.Join(t.TempDir(), "gpu.safetensors")
			if err := train.SaveCheckpoint(path, train.Checkpoint{Params: a.params(), Optimizer: a.opt}); err != nil {
				t.Fatal(err)
			}
			aBits := a.bits(t)
			a.vm.Close()

			b := newTinyModel(t, c, eng)
			defer b.vm.Close()
			if _, err := train.LoadCheckpoint(path, train.Checkpoint{Params: b.params(), Optimizer: b.opt}); err != nil {
				t.Fatal(err)
			}
			got = append(got, b.steps(t, c, k, N)...)
			for s := range want {
				if math.Float64bits(got[s]) != math.Float64bits(want[s]) {
					t.Errorf("step %d: loss %v resumed, %v straight", s, got[s], want[s])
				}
			}
			wb, gb := ref.bits(t), b.bits(t)
			for name, w := range wb {
				for i := range w {
					if gb[name][i] != w[i] {
						t.Fatalf("%s[%d]: bits %x resumed, %x straight", name, i, gb[name][i], w[i])
					}
				}
			}

			// GPU file → CPU model: the weights are the GPU's after step k.
			cpu := newTinyModel(t, c, nil)
			defer cpu.vm.Close()
			if _, err := train.LoadCheckpoint(path, train.Checkpoint{Params: cpu.params(), Optimizer: cpu.opt}); err != nil {
				t.Fatal(err)
			}
			for name, w := range cpu.bits(t) {
				for i := range w {
					if w[i] != aBits[name][i] {
						t.Fatalf("CPU load of the GPU file: %s[%d] = %x, want %x", name, i, w[i], aBits[name][i])
					}
				}
			}
			// CPU file → GPU model.
			cpath := filepath.Join(t.TempDir(), "cpu.safetensors")
			if err := train.SaveCheckpoint(cpath, train.Checkpoint{Params: cpu.params(), Optimizer: cpu.opt}); err != nil {
				t.Fatal(err)
			}
			g2 := newTinyModel(t, c, eng)
			defer g2.vm.Close()
			if _, err := train.LoadCheckpoint(cpath, train.Checkpoint{Params: g2.params(), Optimizer: g2.opt}); err != nil {
				t.Fatal(err)
			}
			for name, w := range g2.bits(t) {
				for i := range w {
					if w[i] != aBits[name][i] {
						t.Fatalf("GPU load of the CPU file: %s[%d] = %x, want %x", name, i, w[i], aBits[name][i])
					}
				}
			}
			// The resumed GPU run from the CPU file takes step k with the straight run's loss.
			l := g2.steps(t, c, k, k+1)
			if math.Float64bits(l[0]) != math.Float64bits(want[k]) {
				t.Errorf("step %d after the CPU file: loss %v, want %v", k, l[0], want[k])
			}
		})
	}
}

// TestClipGradNormGPU: the device norm of a clipped run agrees with the CPU's within float32
// rounding, and the GPU's clipped step follows the CPU's (losses within 1e-4 relative).
func TestClipGradNormGPU(t *testing.T) {
	c := resumeCase{name: "f32 clip", dtype: resumeCases[0].dtype, maxNorm: 0.05}
	eng := gpuEngine(t)
	gpu := newTinyModel(t, c, eng)
	defer gpu.vm.Close()
	cpu := newTinyModel(t, c, nil)
	defer cpu.vm.Close()
	type normed interface{ GradNorm() float64 }
	for s := 0; s < 5; s++ {
		lg := gpu.steps(t, c, s, s+1)[0]
		lc := cpu.steps(t, c, s, s+1)[0]
		ng, nc := gpu.opt.(normed).GradNorm(), cpu.opt.(normed).GradNorm()
		if !(math.Abs(ng-nc) <= 1e-5*nc) || !(nc > c.maxNorm) {
			t.Errorf("step %d: GPU norm %v, CPU norm %v (max %v)", s, ng, nc, c.maxNorm)
		}
		if !(math.Abs(lg-lc) <= 1e-4*math.Abs(lc)) {
			t.Errorf("step %d: GPU loss %v, CPU %v", s, lg, lc)
		}
	}
}
