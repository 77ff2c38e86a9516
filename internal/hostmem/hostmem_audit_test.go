package hostmem

import (
	"math"
	"testing"
)

// TestCheckNaN: a byte count that is NaN (a caller's arithmetic gone wrong) is not a size
// that fits: Check returned nil for it, as NaN > limit is false.
func TestCheckNaN(t *testing.T) {
	prev := SetLimit(1000)
	defer SetLimit(prev)
	if err := Check("weights", math.NaN()); err == nil {
		t.Error("Check(NaN) = nil, want an error")
	}
	if err := Check("weights", math.Inf(1)); err == nil {
		t.Error("Check(+Inf) = nil, want an error")
	}
}
