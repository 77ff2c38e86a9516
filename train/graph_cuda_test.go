//go:build gomoecuda

package train_test

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/train"
)

// TestGraphStepGPU: GraphStep (one eager step, then the step captured as a CUDA graph and
// replayed with each step's batch uploaded first) gives the losses and final weights of
// eager steps bit for bit: Adam on float32 and bfloat16 layers, and SGD with a learning rate
// that changes every step (the scalars a replay takes from device memory), with and without
// gradient-norm clipping (on the device in a replay; the last step's norm too). Where the
// step cannot be captured the steps stay eager, give the same bits, and Reason says why: for
// a bfloat16 layer whose 12-wide expert rows (24 bytes) take the cuBLAS grouped GEMM, which
// reads the plan's offsets on the host.
func TestGraphStepGPU(t *testing.T) {
	const N = 50
	for _, c := range []resumeCase{
		{name: "f32 adam", dtype: resumeCases[0].dtype},
		{name: "bf16 adam", dtype: resumeCases[2].dtype, ffn: 16},
		{name: "bf16 sgd", dtype: resumeCases[2].dtype, sgd: true, ffn: 16},
		{name: "f32 adam clip", dtype: resumeCases[0].dtype, maxNorm: 0.05},
		{name: "bf16 sgd clip", dtype: resumeCases[2].dtype, sgd: true, ffn: 16, maxNorm: 0.05},
		{name: "bf16 adam cublas", dtype: resumeCases[2].dtype},
	} {
		t.Run(c.name, func(t *testing.T) {
			eng := gpuEngine(t)
			ref := newTinyModel(t, c, eng)
			defer ref.vm.Close()
			gm := newTinyModel(t, c, eng)
			defer gm.vm.Close()
			gs := train.NewGraphStep(gm.vm, gm.opt, gm.layer.Learnables())
			defer func() {
				if err := gs.Close(); err != nil {
					t.Error(err)
				}
			}()
			for s := 0; s < N; s++ {
				if sgd, ok := ref.opt.(*train.SGD); ok { // a schedule: the LR changes every step
					sgd.LR = 0.05 / float64(1+s)
					gm.opt.(*train.SGD).LR = sgd.LR
				}
				want := ref.steps(t, c, s, s+1)[0]
				got := gm.graphStep(t, c, gs, s)
				if math.Float64bits(got) != math.Float64bits(want) {
					t.Errorf("step %d (replay %v): loss %v, eager %v", s, gs.Replaying(), got, want)
				}
			}
			if err := eng.Status(); err != nil {
				t.Fatal(err)
			}
			if c.ffn == 0 && c.dtype != resumeCases[0].dtype {
				if gs.Replaying() || gs.Reason() == "" {
					t.Errorf("replaying %v, reason %q; want eager steps and a reason", gs.Replaying(), gs.Reason())
				}
				t.Logf("eager: %s", gs.Reason())
				return
			}
			if !gs.Replaying() {
				t.Fatalf("not replaying: %s", gs.Reason())
			}
			t.Logf("%d device operations per step", gs.Nodes())
			wb, gb := ref.bits(t), gm.bits(t)
			for name, w := range wb {
				for i := range w {
					if gb[name][i] != w[i] {
						t.Fatalf("%s[%d]: bits %x replayed, %x eager", name, i, gb[name][i], w[i])
					}
				}
			}
			if a, ok := gm.opt.(*train.Adam); ok && a.Steps() != N {
				t.Errorf("Adam step count %d after %d steps", a.Steps(), N)
			}
			if c.maxNorm > 0 {
				type normed interface{ GradNorm() float64 }
				got, want := gm.opt.(normed).GradNorm(), ref.opt.(normed).GradNorm()
				if math.Float64bits(got) != math.Float64bits(want) || math.IsNaN(want) {
					t.Errorf("last gradient norm %v replayed, %v eager", got, want)
				}
				// Clipping turned off after the capture: the later steps run eagerly, with the
				// eager model's loss, and Reason says why.
				for _, o := range []G.Solver{ref.opt, gm.opt} {
					switch o := o.(type) {
					case *train.Adam:
						o.MaxGradNorm = 0
					case *train.SGD:
						o.MaxGradNorm = 0
					}
				}
				want1 := ref.steps(t, c, N, N+1)[0]
				got1 := gm.graphStep(t, c, gs, N)
				if gs.Replaying() || gs.Reason() == "" || math.Float64bits(got1) != math.Float64bits(want1) {
					t.Errorf("clipping turned off: replaying %v, reason %q, loss %v (eager %v)", gs.Replaying(), gs.Reason(), got1, want1)
				}
			}
		})
	}
}
