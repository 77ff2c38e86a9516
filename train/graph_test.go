package train_test

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/train"
)

// TestGraphStepOnTheCPU: with the weights on the host GraphStep runs eager steps, with the
// losses and weights of train.Step bit for bit, and says why once it would have captured; a
// nil GraphStep and one without a machine give errors; Close is safe to repeat.
func TestGraphStepOnTheCPU(t *testing.T) {
	c := resumeCases[0]
	ref, gm := newTinyModel(t, c, nil), newTinyModel(t, c, nil)
	defer ref.vm.Close()
	defer gm.vm.Close()
	gs := train.NewGraphStep(gm.vm, gm.opt, gm.layer.Learnables())
	for s := 0; s < 4; s++ {
		want := ref.steps(t, c, s, s+1)[0]
		got := gm.graphStep(t, c, gs, s)
		if math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("step %d: loss %v, train.Step %v", s, got, want)
		}
		if s == 0 && gs.Reason() != "" {
			t.Errorf("after the first step: Reason %q, want none yet", gs.Reason())
		}
	}
	if !strings.Contains(gs.Reason(), "not in GPU memory") || gs.Replaying() || gs.Nodes() != 0 {
		t.Errorf("Reason %q, replaying %v, nodes %d", gs.Reason(), gs.Replaying(), gs.Nodes())
	}
	wb, gb := ref.bits(t), gm.bits(t)
	for name, w := range wb {
		for i := range w {
			if gb[name][i] != w[i] {
				t.Fatalf("%s[%d] differs", name, i)
			}
		}
	}
	for i := 0; i < 2; i++ {
		if err := gs.Close(); err != nil {
			t.Errorf("Close %d: %v", i, err)
		}
	}
	var nilGS *train.GraphStep
	if err := nilGS.Step(nil); err == nil {
		t.Error("Step on a nil GraphStep: no error")
	}
	if nilGS.Reason() != "" || nilGS.Replaying() || nilGS.Nodes() != 0 || nilGS.Close() != nil {
		t.Error("a nil GraphStep's methods")
	}
	if err := train.NewGraphStep(nil, gm.opt, nil).Step(nil); err == nil {
		t.Error("Step without a machine: no error")
	}
}

// graphStep runs step s of m with gs and returns its loss, read from the cost node's value.
func (m *tinyModel) graphStep(t *testing.T, c resumeCase, gs *train.GraphStep, s int) float64 {
	t.Helper()
	m.batch(t, s, c.dtype)
	return m.stepOnBound(t, gs, s)
}

// stepOnBound runs step s of m with gs on the batch its inputs hold and returns its loss.
func (m *tinyModel) stepOnBound(t *testing.T, gs *train.GraphStep, s int) float64 {
	t.Helper()
	m.costV, m.cntV = nil, nil // as for Step: a read copies into its old target
	var loss float64
	if err := gs.Step(func() error {
		var err error
		loss, err = train.Scalar(m.cost.Value())
		return err
	}); err != nil {
		t.Fatalf("step %d: %v", s, err)
	}
	return loss
}

// TestGraphStepStateReady: GraphStep captures a step only when the solver's state (Adam's
// moments, SGD's master copies) exists, so that no capture records its making; it decides from
// the weights alone. Before the first step and after a Release the state is missing; after a
// step it is there. (It used to run Step's checks, which refuse a gradient with no value: on
// the GPU, where the gradients have none between steps, it said "ready" after a Release and a
// capture recorded the moments' zeroing, which every replay ran again. On the CPU the
// gradients keep their values, so here only "before the first step" shows that; the GPU test
// TestGraphStepAfterRelease covers the Release.)
func TestGraphStepStateReady(t *testing.T) {
	for _, c := range []resumeCase{resumeCases[0], {name: "bf16 sgd", dtype: resumeCases[2].dtype, sgd: true, ffn: 16}} {
		t.Run(c.name, func(t *testing.T) {
			m := newTinyModel(t, c, nil)
			defer m.vm.Close()
			gs := train.NewGraphStep(m.vm, m.opt, m.layer.Learnables())
			type releaser interface{ Release() }
			for s, want := range []bool{false, true, true} {
				if s == 2 {
					m.opt.(releaser).Release()
					want = false
				}
				if got := train.StateReady(gs); got != want {
					t.Errorf("before step %d: state ready %v, want %v", s, got, want)
				}
				m.graphStep(t, c, gs, s)
			}
		})
	}
}

// acceptAll is a solver that takes every step and changes nothing.
type acceptAll struct{}

func (acceptAll) Step([]G.ValueGrad) error { return nil }

// TestGraphStepNilFirstParam: with a solver that takes a nil param (Adam and SGD refuse it,
// naming it), a nil first param does not make GraphStep panic; its capture used to take
// params[0] as the first weight and panicked on the second step.
func TestGraphStepNilFirstParam(t *testing.T) {
	g := G.NewGraph()
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 1), G.WithName("w"), G.WithInit(G.Zeroes()))
	loss := G.Must(G.Sum(G.Must(G.Square(w))))
	if _, err := G.Grad(loss, w); err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	gs := train.NewGraphStep(vm, acceptAll{}, G.Nodes{nil, w})
	for i := range 3 {
		err := func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("panic: %v", r)
				}
			}()
			return gs.Step(nil)
		}()
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if !strings.Contains(gs.Reason(), "not in GPU memory") {
		t.Errorf("Reason %q, want the weights' place", gs.Reason())
	}
}
