package train

import "testing"

// TestLinearEndsAtFloor: the doc says Linear decays "down to Peak·Floor at step Total−1, and
// Peak·Floor after". 1−(1−Floor)·1 is not Floor in float64 for most floors (0.1: it is
// 0.09999999999999998), so step Total−1 ran below the floor and the rate went up at Total.
func TestLinearEndsAtFloor(t *testing.T) {
	for _, floor := range []float64{0.1, 0.2, 1.0 / 3, 0.05, 0.7} {
		l := Linear{Peak: 1e-3, Floor: floor, Warmup: 2, Total: 10}
		end, after := l.LR(9), l.LR(10)
		if end != l.Peak*floor || end < after {
			t.Errorf("Floor %v: LR(Total-1) = %v, LR(Total) = %v, want both Peak·Floor = %v", floor, end, after, l.Peak*floor)
		}
	}
}
