package kernels

import (
	"math"
	"testing"
)

// TestRowLogSumExp: values against the direct formula (and an infinite row), the backward's
// softmax·g added onto dx, and size errors.
func TestRowLogSumExp(t *testing.T) {
	x := []float64{0, 1, 2, 1000, 1001, 1002, math.Inf(-1), math.Inf(-1), math.Inf(-1)}
	out := make([]float64, 3)
	if err := RowLogSumExp(out, x, 3); err != nil {
		t.Fatal(err)
	}
	want := math.Log(1 + math.E + math.E*math.E)
	if !(math.Abs(out[0]-want) <= 1e-15) || !(math.Abs(out[1]-(1000+want)) <= 1e-12) || !math.IsInf(out[2], -1) {
		t.Errorf("RowLogSumExp = %v, want [%v %v -Inf]", out, want, 1000+want)
	}
	dx := []float64{1, 1, 1, 0, 0, 0}
	if err := RowLogSumExpBackward(dx, x[:6], out[:2], []float64{2, 1}, 3); err != nil {
		t.Fatal(err)
	}
	for i, v := range dx {
		// softmax of [0 1 2] and of [1000 1001 1002] alike: e^j / (1 + e + e²)
		w := math.Exp(float64(i%3)) / (1 + math.E + math.E*math.E) * []float64{2, 1}[i/3]
		if i < 3 {
			w++
		}
		if !(math.Abs(v-w) <= 1e-14) {
			t.Errorf("dx[%d] = %v, want %v", i, v, w)
		}
	}
	if err := RowLogSumExp(out, x[:8], 3); err == nil {
		t.Error("8 elements for rows of 3: no error")
	}
	if err := RowLogSumExpBackward(dx[:5], x[:6], out[:2], []float64{2, 1}, 3); err == nil {
		t.Error("short dx: no error")
	}
}

// TestLogSumExpNaN: a row holding a NaN has a NaN log-sum-exp (RowLogSumExp, and the z-loss's
// rowLSE), also beside +Inf; a row with +Inf and no NaN has +Inf. A row of NaN and +Inf used
// to give +Inf (math.Max(+Inf, NaN) is +Inf), against the NaN policy of docs/errors.md.
func TestLogSumExpNaN(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	for _, c := range []struct {
		name string
		row  []float64
		want float64
	}{
		{"NaN then +Inf", []float64{nan, inf}, nan},
		{"+Inf then NaN", []float64{inf, nan}, nan},
		{"NaN and 1", []float64{nan, 1}, nan},
		{"-Inf and NaN", []float64{math.Inf(-1), nan}, nan},
		{"+Inf and 1", []float64{1, inf}, inf},
		{"-Inf only", []float64{math.Inf(-1), math.Inf(-1)}, math.Inf(-1)},
	} {
		same := func(got float64) bool { return got == c.want || math.IsNaN(got) && math.IsNaN(c.want) }
		out64, out32 := make([]float64, 1), make([]float32, 1)
		row32 := []float32{float32(c.row[0]), float32(c.row[1])}
		if err := RowLogSumExp(out64, c.row, 2); err != nil || !same(out64[0]) {
			t.Errorf("%s: RowLogSumExp float64 = %v, %v, want %v", c.name, out64[0], err, c.want)
		}
		if err := RowLogSumExp(out32, row32, 2); err != nil || !same(float64(out32[0])) {
			t.Errorf("%s: RowLogSumExp float32 = %v, %v, want %v", c.name, out32[0], err, c.want)
		}
		if got := rowLSE(c.row); !same(got) {
			t.Errorf("%s: rowLSE = %v, want %v", c.name, got, c.want)
		}
		if l, err := ZLossForward(c.row, 1, 2, 1); err != nil || !(l == c.want*c.want || math.IsNaN(l) && math.IsNaN(c.want)) {
			t.Errorf("%s: ZLossForward = %v, %v, want %v squared", c.name, l, err, c.want)
		}
	}
}

// TestRowLogSumExpBackwardLargeLogits: the backward's softmax of rows far from 0, against the
// softmax written out in float64 (exp(x − max) / Σ exp(x − max)). It used to take
// exp(x − lse) with the forward's lse, which rounds away log Σ exp(x − max) once |lse| is
// large against it (float32 from about 10⁶, float64 from about 10¹⁵): a row of two equal
// logits of 10³⁰ got the gradient [1 1] instead of [0.5 0.5], [10⁷ 10⁷] in float32 got
// [0.37 0.37].
func TestRowLogSumExpBackwardLargeLogits(t *testing.T) {
	softmax := func(x []float64) []float64 {
		m := math.Inf(-1)
		for _, v := range x {
			m = math.Max(m, v)
		}
		var s float64
		for _, v := range x {
			s += math.Exp(v - m)
		}
		p := make([]float64, len(x))
		for i, v := range x {
			p[i] = math.Exp(v-m) / s
		}
		return p
	}
	for _, row := range [][]float64{
		{1e30, 1e30},
		{-3e38, -3e38, -3e38},
		{3e38, 3e38, 3e38, 3e38},
		{1e7, 1e7},
		{1e7, 1e7 + 1},
		{1e16, 1e16, 1e16 + 4},
		{-1e30, -1e30 + 1e24, 5},
	} {
		E, g := len(row), 1.5
		want := softmax(row)
		for i := range want {
			want[i] *= g
		}
		out64, dx64 := make([]float64, 1), make([]float64, E)
		if err := RowLogSumExp(out64, row, E); err != nil {
			t.Fatal(err)
		}
		if err := RowLogSumExpBackward(dx64, row, out64, []float64{g}, E); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !(math.Abs(dx64[i]-want[i]) <= 1e-14) {
				t.Errorf("float64 %v: dx = %v, want %v", row, dx64, want)
				break
			}
		}
		row32 := make([]float32, E)
		for i, v := range row {
			row32[i] = float32(v)
		}
		want = softmax(to64(row32))
		out32, dx32 := make([]float32, 1), make([]float32, E)
		if err := RowLogSumExp(out32, row32, E); err != nil {
			t.Fatal(err)
		}
		if err := RowLogSumExpBackward(dx32, row32, out32, []float32{float32(g)}, E); err != nil {
			t.Fatal(err)
		}
		for i := range want {
			if !(math.Abs(float64(dx32[i])-g*want[i]) <= 1e-6) {
				t.Errorf("float32 %v: dx = %v, want %v times %v", row32, dx32, want, g)
				break
			}
		}
	}
}
