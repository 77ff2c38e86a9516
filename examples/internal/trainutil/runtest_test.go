package trainutil

import (
	"errors"
	"strings"
	"testing"
)

// TestRunHelpers: FirstError keeps the order; ResumedLosses names the first differing step
// or the step counts; Name and Shape describe MoE and dense blocks.
func TestRunHelpers(t *testing.T) {
	a, b := errors.New("a"), errors.New("b")
	if err := FirstError(nil, a, b); err != a {
		t.Errorf("FirstError(nil, a, b) = %v, want a", err)
	}
	if err := FirstError(nil, nil); err != nil {
		t.Errorf("FirstError(nil, nil) = %v", err)
	}
	whole := []float64{3, 2, 1}
	for _, c := range []struct {
		a, b []float64
		want string
	}{
		{[]float64{3}, []float64{2, 1}, ""},
		{[]float64{3, 2}, []float64{1.5}, "step 3: loss 1.5 resumed, 1 unbroken"},
		{[]float64{3}, []float64{2}, "1 + 1 steps, want 3"},
	} {
		err := ResumedLosses(c.a, c.b, whole)
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("ResumedLosses(%v, %v) = %v, want %q", c.a, c.b, err, c.want)
		}
	}
	cfg := DefaultBlockConfig()
	if got := cfg.Name() + " " + cfg.Shape(); got != "MoE E=8 K=2 swiglu H=128 F=128" {
		t.Errorf("MoE block: %q", got)
	}
	cfg.Dense = true
	if got := cfg.Name() + " " + cfg.Shape(); got != "dense swiglu H=128 F=128" {
		t.Errorf("dense block: %q", got)
	}
}
