package kernels

import (
	"math"
	"math/rand"
	"os"
	"testing"
)

// ulp32 is the distance in units in the last place between two float32 (adjacent floats are 1
// apart, +0 and −0 are 0 apart).
func ulp32(a, b float32) int64 {
	ord := func(f float32) int64 {
		u := math.Float32bits(f)
		if u&0x80000000 != 0 {
			return -int64(u & 0x7fffffff)
		}
		return int64(u)
	}
	d := ord(a) - ord(b)
	if d < 0 {
		d = -d
	}
	return d
}

// sigmoidULP is the accuracy bound of sigmoidPair32 in float32 ulps against the float64
// sigmoid rounded to float32, measured over every float32 in [−110, 110]
// (GOMOE_EXHAUSTIVE=1 go test -run SigmoidPair32 ./kernels/).
const sigmoidULP = 2

// TestSigmoidPair32 checks σ(x) and σ(−x) against the float64 sigmoid on a sweep of float32
// bit patterns across [−110, 110] (every float32 with GOMOE_EXHAUSTIVE=1), random lengths
// (the padded tail) and the special values.
func TestSigmoidPair32(t *testing.T) {
	step := uint32(1009)
	if os.Getenv("GOMOE_EXHAUSTIVE") != "" {
		step = 1
	}
	lim := math.Float32bits(110)
	var xs []float32
	for u := uint32(0); u <= lim; u += step {
		xs = append(xs, math.Float32frombits(u), math.Float32frombits(u|0x80000000))
		if len(xs) >= 1<<16 || u+step > lim {
			sigmoidCheck(t, xs)
			xs = xs[:0]
		}
	}
	rng := rand.New(rand.NewSource(5))
	for _, n := range []int{0, 1, 7, 8, 9, 17, 100} {
		x := make([]float32, n)
		for i := range x {
			x[i] = float32(rng.NormFloat64() * 10)
		}
		sigmoidCheck(t, x)
	}
	inf := float32(math.Inf(1))
	x := []float32{0, float32(math.Copysign(0, -1)), inf, -inf, float32(math.NaN()), 1e-30, -1e-30, 88, -88, 103, -103, 104, -104, 200, -200, math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32}
	s, sm := make([]float32, len(x)), make([]float32, len(x))
	sigmoidPair32(s, sm, x)
	for i, v := range x {
		want := float32(sigmoid(float64(v)))
		wantM := float32(sigmoid(-float64(v)))
		if math.IsNaN(float64(v)) {
			if !math.IsNaN(float64(s[i])) || !math.IsNaN(float64(sm[i])) {
				t.Errorf("σ(NaN) = %v, %v, want NaN", s[i], sm[i])
			}
			continue
		}
		if d, dm := ulp32(s[i], want), ulp32(sm[i], wantM); d > sigmoidULP || dm > sigmoidULP {
			t.Errorf("x=%v: σ(x)=%v (want %v, %d ulp), σ(−x)=%v (want %v, %d ulp)", v, s[i], want, d, sm[i], wantM, dm)
		}
	}
}

func sigmoidCheck(t *testing.T, x []float32) {
	t.Helper()
	s, sm := make([]float32, len(x)), make([]float32, len(x))
	sigmoidPair32(s, sm, x)
	for i, v := range x {
		want, wantM := float32(sigmoid(float64(v))), float32(sigmoid(-float64(v)))
		if d, dm := ulp32(s[i], want), ulp32(sm[i], wantM); d > sigmoidULP || dm > sigmoidULP {
			t.Fatalf("x=%v (%#x): σ(x)=%v (want %v, %d ulp), σ(−x)=%v (want %v, %d ulp)", v, math.Float32bits(v), s[i], want, d, sm[i], wantM, dm)
		}
	}
}
