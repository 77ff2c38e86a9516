package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"os"
	"runtime"
	"testing"
)

// expSubULP is the accuracy bound of expSub32 in float32 ulps against exp(float64(x) −
// float64(m)) rounded to float32, measured by TestExpSub32 with GOMOE_EXHAUSTIVE=1 (x = m − d
// for every float32 d in [0, 110], at each of its maxima m).
const expSubULP = 1

// softmaxULP is the accuracy bound of the float32 row softmax in float32 ulps against the
// float64 formula rounded to float32, tested by TestRowSoftmax32 (the worst it has seen is 2:
// the exp's ulp, the float64 sum's and division's, and the final rounding).
const softmaxULP = 3

// TestExpSub32 checks exp(x − m) against the float64 exp on a sweep of differences d in
// [0, 110] (every float32 with GOMOE_EXHAUSTIVE=1, every 97th by default) for maxima m of
// several magnitudes, x = m − d rounded to float32, plus −Inf and the padded tail.
func TestExpSub32(t *testing.T) {
	step := uint32(97)
	if os.Getenv("GOMOE_EXHAUSTIVE") != "" {
		step = 1
	}
	ms := []float32{0, 1, -3.5, 0.001, 87.5, -1e6, 1e6, 3e38}
	lim := math.Float32bits(110)
	worst := int64(0)
	for _, m := range ms {
		if testing.Short() && m != 0 {
			continue
		}
		var xs []float32
		check := func() {
			y := make([]float32, len(xs))
			expSub32(y, xs, m)
			for i, x := range xs {
				want := float32(math.Exp(float64(x) - float64(m)))
				d := ulp32(y[i], want)
				worst = max(worst, d)
				if d > expSubULP {
					t.Fatalf("m=%v x=%v: exp(x−m) = %v (%#x), want %v (%#x), %d ulp", m, x, y[i], math.Float32bits(y[i]), want, math.Float32bits(want), d)
				}
			}
			xs = xs[:0]
		}
		for u := uint32(0); u <= lim; u += step {
			x := m - math.Float32frombits(u)
			if x > m { // m − d rounded up past m for tiny d
				continue
			}
			xs = append(xs, x)
			if len(xs) == 1<<16 {
				check()
			}
		}
		xs = append(xs, float32(math.Inf(-1)), m, -math.MaxFloat32)
		check()
	}
	t.Logf("worst %d ulp", worst)
}

// softmaxRef64 is the softmax of one row in float64, rounded once to float32: the
// independent reference (max subtraction, exp, sum and division in float64).
func softmaxRef64(x []float32) []float32 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s float64
	e := make([]float64, len(x))
	for j, v := range x {
		e[j] = math.Exp(float64(v) - m)
		s += e[j]
	}
	out := make([]float32, len(x))
	for j := range e {
		out[j] = float32(e[j] / s)
	}
	return out
}

func TestRowSoftmax32(t *testing.T) {
	inf, nan := float32(math.Inf(1)), float32(math.NaN())
	cases := []struct {
		name       string
		rows, cols int
		scale      float64
		special    []float32 // written over the start of row 0 when not nil
	}{
		{"router 8", 1024, 8, 3, nil},
		{"many rows", 40000, 8, 20, nil},
		{"many wide rows", 2000, 100, 8, nil},
		{"cols 1", 7, 1, 10, nil},
		{"cols 5", 33, 5, 1, nil},
		{"cols 9", 40, 9, 30, nil},
		{"cols 64", 50, 64, 10, nil},
		{"cols 129 wide spread", 20, 129, 200, nil},
		{"cols 1000", 9, 1000, 5, nil},
		{"huge", 4, 16, 1e37, nil},
		{"tiny", 4, 16, 1e-30, nil},
		{"-Inf entries", 3, 12, 2, []float32{-inf, 0, -inf, 1}},
		{"all -Inf", 2, 8, 1, []float32{-inf, -inf, -inf, -inf, -inf, -inf, -inf, -inf}},
		{"+Inf", 2, 8, 1, []float32{inf, 1}},
		{"NaN", 2, 10, 1, []float32{1, nan}},
		{"max float", 2, 8, 1, []float32{math.MaxFloat32, -math.MaxFloat32, 0}},
	}
	worst := int64(0)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rng := rand.New(rand.NewSource(int64(c.rows*1000 + c.cols)))
			x := make([]float32, c.rows*c.cols)
			for i := range x {
				x[i] = float32(rng.NormFloat64() * c.scale)
			}
			copy(x, c.special)
			y := make([]float32, len(x))
			if err := RowForward(RowSoftmax, y, x, c.cols); err != nil {
				t.Fatal(err)
			}
			for r := 0; r < c.rows; r++ {
				want := softmaxRef64(x[r*c.cols : (r+1)*c.cols])
				for j, w := range want {
					g := y[r*c.cols+j]
					if w != w || g != g {
						if (w != w) != (g != g) {
							t.Fatalf("row %d col %d: %v, want %v", r, j, g, w)
						}
						continue
					}
					d := ulp32(g, w)
					worst = max(worst, d)
					if d > softmaxULP {
						t.Fatalf("row %d col %d: %v, want %v (%d ulp)", r, j, g, w, d)
					}
				}
			}
			// The same bits on one goroutine as on several.
			prev := runtime.GOMAXPROCS(1)
			y1 := make([]float32, len(x))
			err := RowForward(RowSoftmax, y1, x, c.cols)
			runtime.GOMAXPROCS(prev)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(y1) != fmt.Sprint(y) {
				t.Fatal("GOMAXPROCS=1 gives other bits")
			}
		})
	}
	t.Logf("worst %d ulp", worst)
}
