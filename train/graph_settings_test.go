package train

import (
	"math"
	"strings"
	"testing"
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
	}{
		{"NaN rate", func(a *Adam, s *SGD) { a.LR, s.LR = nan, nan }, "learning rate NaN"},
		{"negative rate", func(a *Adam, s *SGD) { a.LR, s.LR = -1, -1 }, "learning rate -1"},
		{"infinite weight decay", func(a *Adam, s *SGD) { a.WeightDecay, s.WeightDecay = math.Inf(1), math.Inf(1) }, "weight decay +Inf"},
		{"negative MaxGradNorm", func(a *Adam, s *SGD) { a.MaxGradNorm, s.MaxGradNorm = -1, -1 }, "MaxGradNorm -1"},
		{"beta 1", func(a *Adam, s *SGD) { a.Beta1 = 1 }, "betas 1"},
		{"eps 0", func(a *Adam, s *SGD) { a.Eps = 0 }, "eps 0"},
	} {
		a, s := NewAdam(0.01), &SGD{LR: 0.1}
		c.set(a, s)
		if err := a.nextScalars(nil, nil); err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gomoe: train: Adam: ") {
			t.Errorf("%s: Adam: %v, want %q", c.name, err, c.want)
		}
		if a.gsc.buf != nil {
			t.Errorf("%s: Adam made its buffer", c.name)
		}
		if c.name == "beta 1" || c.name == "eps 0" {
			continue // Adam's own settings
		}
		err := s.nextScalars(nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "gomoe: train: SGD: ") {
			t.Errorf("%s: SGD: %v, want %q", c.name, err, c.want)
		}
		if s.gsc.buf != nil {
			t.Errorf("%s: SGD made its buffer", c.name)
		}
	}
}
