package train

import (
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestNextScalarsChecksSettings: the scalars a GraphStep replay reads are checked as Step
// checks them (a replay runs no Step): a bad setting is an error and the buffer is not made or
// written. GPU: TestGraphStepReplayChecksSettings.
func TestNextScalarsChecksSettings(t *testing.T) {
	nan := math.NaN()
	for _, c := range []struct {
		name string
		set  func(a *Adam, s *SGD)
		want string
		f32  string // the first weight updated in float32 ("": none)
	}{
		{"NaN rate", func(a *Adam, s *SGD) { a.LR, s.LR = nan, nan }, "learning rate NaN", ""},
		{"negative rate", func(a *Adam, s *SGD) { a.LR, s.LR = -1, -1 }, "learning rate -1", ""},
		{"infinite weight decay", func(a *Adam, s *SGD) { a.WeightDecay, s.WeightDecay = math.Inf(1), math.Inf(1) }, "weight decay +Inf", ""},
		{"negative MaxGradNorm", func(a *Adam, s *SGD) { a.MaxGradNorm, s.MaxGradNorm = -1, -1 }, "MaxGradNorm -1", ""},
		{"beta 1", func(a *Adam, s *SGD) { a.Beta1 = 1 }, "betas 1", ""},
		{"eps 0", func(a *Adam, s *SGD) { a.Eps = 0 }, "eps 0", ""},
		// Settings a float32 update rounds to +Inf or 0: a replay made the weights NaN.
		{"rate beyond float32", func(a *Adam, s *SGD) { a.LR, s.LR = 1e39, 1e39 }, "learning rate 1e+39 does not fit the float32 update of weight 1 (w)", "weight 1 (w)"},
		{"weight decay beyond float32", func(a *Adam, s *SGD) { a.WeightDecay, s.WeightDecay = 1e39, 1e39 }, "weight decay 1e+39 does not fit the float32 update of weight 1 (w)", "weight 1 (w)"},
		{"eps 1e-50", func(a *Adam, s *SGD) { a.Eps = 1e-50 }, "eps 1e-50 rounds to 0 in the float32 update of weight 1 (w)", "weight 1 (w)"},
	} {
		a, s := NewAdam(0.01), &SGD{LR: 0.1}
		c.set(a, s)
		if err := a.nextScalars(nil, nil, c.f32); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gomoe: train: Adam: ") {
			t.Errorf("%s: Adam: %v, want %q", c.name, err, c.want)
		}
		if a.gsc.buf != nil {
			t.Errorf("%s: Adam made its buffer", c.name)
		}
		if c.name == "beta 1" || strings.HasPrefix(c.name, "eps ") {
			continue // Adam's own settings
		}
		err := s.nextScalars(nil, nil, c.f32)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gomoe: train: SGD: ") {
			t.Errorf("%s: SGD: %v, want %q", c.name, err, c.want)
		}
		if s.gsc.buf != nil {
			t.Errorf("%s: SGD made its buffer", c.name)
		}
	}
	// A GraphStep names the weight as Step does: the first float32 or bfloat16 one.
	g := G.NewGraph()
	f64 := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("v"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 2}))))
	bf := G.NewVector(g, bfloat16.Dtype, G.WithShape(2), G.WithName("w"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.Of(bfloat16.Dtype))))
	if got := float32Params(G.Nodes{f64, bf}); got != "weight 1 (w)" {
		t.Errorf("float32Params = %q, want weight 1 (w)", got)
	}
	if got := float32Params(G.Nodes{f64}); got != "" {
		t.Errorf("float32Params of a float64 weight = %q, want none", got)
	}
}

// TestGraphStepRebound: rebound names an input node bound to another value than at the
// capture (a new tensor or scalar, or none), and nothing for the same values. GPU:
// TestGraphStepReboundInput.
func TestGraphStepRebound(t *testing.T) {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 2), G.WithName("x"))
	c := G.NewScalar(g, tensor.Float64, G.WithName("c"))
	xv := tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float32{1, 2, 3, 4}))
	if err := G.Let(x, xv); err != nil {
		t.Fatal(err)
	}
	if err := G.Let(c, 0.5); err != nil {
		t.Fatal(err)
	}
	s := &GraphStep{inputs: G.Nodes{x, c}, bound: []G.Value{x.Value(), c.Value()}}
	if r := s.rebound(); r != "" {
		t.Fatalf("the same values: %q", r)
	}
	if err := G.Let(x, xv.Clone()); err != nil {
		t.Fatal(err)
	}
	if r := s.rebound(); !strings.Contains(r, "node x ") {
		t.Errorf("x rebound: %q", r)
	}
	if err := G.Let(x, xv); err != nil {
		t.Fatal(err)
	}
	if err := G.Let(c, 0.5); err != nil {
		t.Fatal(err)
	}
	if r := s.rebound(); !strings.Contains(r, "node c ") {
		t.Errorf("c rebound: %q", r)
	}
}
