package reftest

import (
	"math"
	"testing"
)

func TestFirstBitDiff(t *testing.T) {
	nan1, nan2 := math.Float64frombits(0x7ff8000000000001), math.Float64frombits(0x7ff8000000000002)
	for _, c := range []struct {
		name string
		a, b []float64
		want int
	}{
		{"equal", []float64{1, 2, 3}, []float64{1, 2, 3}, -1},
		{"empty", nil, nil, -1},
		{"second differs", []float64{1, 2, 3}, []float64{1, 2.5, 3}, 1},
		{"signed zero", []float64{0}, []float64{math.Copysign(0, -1)}, 0},
		{"same NaN", []float64{nan1}, []float64{nan1}, -1},
		{"NaN payloads", []float64{nan1}, []float64{nan2}, 0},
		{"prefix", []float64{1, 2}, []float64{1, 2, 3}, 2},
	} {
		if got := FirstBitDiff(c.a, c.b); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	if got := FirstBitDiff([]float32{1, 2}, []float32{1, float32(math.Copysign(0, -1))}); got != 1 {
		t.Errorf("float32: %d, want 1", got)
	}
}
