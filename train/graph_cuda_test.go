//go:build gomoecuda

package train_test

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"

	gdev "github.com/gomoe/gomoe/device"
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
			eng, ref, gm, gs := graphPair(t, c)
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
			sameWeights(t, "replayed", ref, gm)
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

// TestGraphStepReplayChecksSettings: a replayed step checks the solver's settings as an eager
// Step does. A learning rate set to NaN (Adam) or below 0 (SGD) after the capture is an error,
// with no weight changed and Adam's step count unchanged (the replay used to write the NaN rate
// to every weight); with the rate put back the replays go on.
func TestGraphStepReplayChecksSettings(t *testing.T) {
	for _, c := range []resumeCase{
		{name: "f32 adam", dtype: resumeCases[0].dtype},
		{name: "bf16 sgd", dtype: resumeCases[2].dtype, sgd: true, ffn: 16},
	} {
		t.Run(c.name, func(t *testing.T) {
			eng := gpuEngine(t)
			m := newTinyModel(t, c, eng)
			defer m.vm.Close()
			gs := train.NewGraphStep(m.vm, m.opt, m.layer.Learnables())
			defer gs.Close()
			for s := 0; s < 3; s++ {
				m.graphStep(t, c, gs, s)
			}
			if !gs.Replaying() {
				t.Fatalf("not replaying: %s", gs.Reason())
			}
			before := m.bits(t)
			var lr *float64
			bad := math.NaN()
			switch o := m.opt.(type) {
			case *train.Adam:
				lr = &o.LR
			case *train.SGD:
				lr, bad = &o.LR, -1
			}
			good := *lr
			*lr = bad
			m.batch(t, 3, c.dtype)
			err := gs.Step(nil)
			if err == nil || !strings.Contains(err.Error(), "learning rate") {
				t.Fatalf("replay with learning rate %v: %v, want an error", bad, err)
			}
			for name, w := range m.bits(t) {
				for i := range w {
					if w[i] != before[name][i] {
						t.Fatalf("%s[%d] changed by the refused step", name, i)
					}
				}
			}
			if a, ok := m.opt.(*train.Adam); ok && a.Steps() != 3 {
				t.Errorf("Adam step count %d after the refused step, want 3", a.Steps())
			}
			*lr = good
			m.graphStep(t, c, gs, 3)
			if !gs.Replaying() {
				t.Errorf("not replaying after the rate was put back: %s", gs.Reason())
			}
			if err := eng.Status(); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestGraphStepReboundInput: after the capture the batch is bound to new device tensors (G.Let)
// instead of uploaded into the captured ones, which then hold another batch. The replay used to
// train on the captured tensors' batch, silently; now the step runs eagerly on the new tensors,
// with the loss and weights of eager steps bit for bit, and Reason names the node.
func TestGraphStepReboundInput(t *testing.T) {
	c := resumeCase{name: "f32 adam", dtype: resumeCases[0].dtype}
	eng, ref, m, gs := graphPair(t, c)
	want := ref.steps(t, c, 0, 4)
	for s := 0; s < 3; s++ {
		m.graphStep(t, c, gs, s)
	}
	if !gs.Replaying() {
		t.Fatalf("not replaying: %s", gs.Reason())
	}
	m.batch(t, 3, c.dtype) // step 3's batch into the captured tensors, then copied to new ones
	x2, err := eng.NewTensor(m.xd.Dtype(), m.xd.Shape()...)
	if err != nil {
		t.Fatal(err)
	}
	y2, err := eng.NewTensor(m.yd.Dtype(), m.yd.Shape()...)
	if err != nil {
		t.Fatal(err)
	}
	if err := eng.Memcpy(x2, m.xd); err != nil {
		t.Fatal(err)
	}
	if err := eng.Memcpy(y2, m.yd); err != nil {
		t.Fatal(err)
	}
	if err := G.Let(m.x, x2); err != nil {
		t.Fatal(err)
	}
	if err := G.Let(m.y, y2); err != nil {
		t.Fatal(err)
	}
	m.batch(t, 0, c.dtype) // the captured tensors now hold step 0's batch
	loss := m.stepOnBound(t, gs, 3)
	if math.Float64bits(loss) != math.Float64bits(want[3]) {
		t.Errorf("step 3 on the rebound batch: loss %v, eager %v", loss, want[3])
	}
	if gs.Replaying() || !strings.Contains(gs.Reason(), "node x ") {
		t.Errorf("replaying %v, reason %q; want eager steps naming node x", gs.Replaying(), gs.Reason())
	}
	sameWeights(t, "after the rebound step", ref, m)
}

// TestGraphStepCaptureFails: a capture that fails after the solver's Step ran (here at its end,
// by a test hook) leaves no trace: the step runs eagerly, Reason says why, Adam's step count is
// the number of steps taken (it was one ahead, so every later step used the next step's bias
// corrections), the gradient norm that a step's after reads is the step before's (with
// clipping it read a device slot the failed capture had pointed it at), and the losses and
// weights are the eager model's bit for bit.
func TestGraphStepCaptureFails(t *testing.T) {
	const N = 4
	old := train.SetCaptureEnd(func() error { return errors.New("injected capture failure") })
	defer train.SetCaptureEnd(old)
	type normed interface{ GradNorm() float64 }
	for _, c := range []resumeCase{
		{name: "f32 adam", dtype: resumeCases[0].dtype},
		{name: "f32 adam clip", dtype: resumeCases[0].dtype, maxNorm: 0.05},
		{name: "bf16 sgd clip", dtype: resumeCases[2].dtype, sgd: true, ffn: 16, maxNorm: 0.05},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, ref, gm, gs := graphPair(t, c)
			for s := 0; s < N; s++ {
				var want, got [2]float64 // loss, and the norm the after sees
				ref.batch(t, s, c.dtype)
				ref.costV, ref.cntV = nil, nil
				if err := train.Step(ref.vm, ref.opt, ref.layer.Learnables(), func() error {
					l, err := train.Scalar(ref.costV)
					want = [2]float64{l, ref.opt.(normed).GradNorm()}
					return err
				}); err != nil {
					t.Fatal(err)
				}
				gm.batch(t, s, c.dtype)
				gm.costV, gm.cntV = nil, nil
				if err := gs.Step(func() error {
					l, err := train.Scalar(gm.cost.Value())
					got = [2]float64{l, gm.opt.(normed).GradNorm()}
					return err
				}); err != nil {
					t.Fatal(err)
				}
				for i, what := range []string{"loss", "gradient norm in after"} {
					if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
						t.Errorf("step %d: %s %v, eager %v", s, what, got[i], want[i])
					}
				}
			}
			if gs.Replaying() || !strings.Contains(gs.Reason(), "injected capture failure") {
				t.Errorf("replaying %v, reason %q; want eager steps and the capture's error", gs.Replaying(), gs.Reason())
			}
			if a, ok := gm.opt.(*train.Adam); ok && a.Steps() != N {
				t.Errorf("Adam step count %d after %d steps", a.Steps(), N)
			}
			sameWeights(t, "after the failed capture", ref, gm)
		})
	}
}

// TestGraphStepAfterRelease: a Release of the solver (LoadCheckpoint makes one) frees the
// moments and scalars (and SGD's master copies) that a captured graph reads and updates. After
// the capture (step 3 here), the next step used to replay the graph on freed memory; between
// the warm-up step and the capture (step 1), the capture made the state, recording its zeroing
// or copying into the graph, which every replay then ran again. Now the step after a Release
// runs eagerly, the one after it is captured, and the losses and weights are those of an eager
// model released at the same step, bit for bit.
func TestGraphStepAfterRelease(t *testing.T) {
	const N = 7
	for _, c := range []resumeCase{
		{name: "f32 adam", dtype: resumeCases[0].dtype},
		{name: "bf16 sgd", dtype: resumeCases[2].dtype, sgd: true, ffn: 16},
	} {
		for _, at := range []int{1, 3} {
			t.Run(fmt.Sprintf("%s/release before step %d", c.name, at), func(t *testing.T) {
				testGraphStepAfterRelease(t, c, at, N)
			})
		}
	}
}

func testGraphStepAfterRelease(t *testing.T, c resumeCase, at, N int) {
	_, ref, gm, gs := graphPair(t, c)
	type releaser interface{ Release() }
	for s := 0; s < N; s++ {
		if s == at {
			if at > 2 && !gs.Replaying() {
				t.Fatalf("not replaying before the release: %s", gs.Reason())
			}
			ref.opt.(releaser).Release()
			gm.opt.(releaser).Release()
		}
		want := ref.steps(t, c, s, s+1)[0]
		got := gm.graphStep(t, c, gs, s)
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("step %d (replay %v): loss %v, eager %v", s, gs.Replaying(), got, want)
		}
	}
	if !gs.Replaying() {
		t.Errorf("not replaying again after the release: %s", gs.Reason())
	}
	sameWeights(t, "after the release", ref, gm)
}

// graphPair makes two tiny models of case c on one GPU engine eng, ref for eager steps and gm
// for a GraphStep gs; they are closed when the test ends.
func graphPair(t *testing.T, c resumeCase) (eng *gdev.Engine, ref, gm *tinyModel, gs *train.GraphStep) {
	t.Helper()
	eng = gpuEngine(t)
	ref = newTinyModel(t, c, eng)
	t.Cleanup(func() { ref.vm.Close() })
	gm = newTinyModel(t, c, eng)
	t.Cleanup(func() { gm.vm.Close() })
	gs = train.NewGraphStep(gm.vm, gm.opt, gm.layer.Learnables())
	t.Cleanup(func() {
		if err := gs.Close(); err != nil {
			t.Error(err)
		}
	})
	return eng, ref, gm, gs
}

// sameWeights fails t unless gm's weights have ref's bits.
func sameWeights(t *testing.T, what string, ref, gm *tinyModel) {
	t.Helper()
	wb, gb := ref.bits(t), gm.bits(t)
	for name, w := range wb {
		for i := range w {
			if gb[name][i] != w[i] {
				t.Fatalf("%s[%d]: bits %x %s, %x eager", name, i, gb[name][i], what, w[i])
			}
		}
	}
}
