package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// accRowsRef is the rounding contract of accRows written as the plain scalar loop: each
// product rounded to F, added from +0 in row order.
func accRowsRef[F Float](d, src []F, offs []int, w []F) {
	for i := range d {
		var acc F
		for j, o := range offs {
			p := F(w[j] * src[o+i])
			acc = acc + p
		}
		d[i] = acc
	}
}

func TestAccRows(t *testing.T) {
	cases := []struct {
		name string
		k, n int
	}{
		{"none", 0, 9}, {"empty row", 3, 0}, {"k1 n1", 1, 1}, {"k1 n7", 1, 7}, {"k2 n8", 2, 8},
		{"k2 n9", 2, 9}, {"k3 n31", 3, 31}, {"k4 n32", 4, 32}, {"k5 n33", 5, 33},
		{"k8 n100", 8, 100}, {"k6 n4096", 6, 4096}, {"k1 n4099", 1, 4099},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			accRowsCase[float32](t, c.k, c.n)
			accRowsCase[float64](t, c.k, c.n)
		})
	}
}

func accRowsCase[F Float](t *testing.T, k, n int) {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(31*k + n)))
	rows := k + 2
	src := make([]F, rows*n+5)
	for i := range src {
		src[i] = F(rng.NormFloat64() * math.Pow(10, float64(rng.Intn(9)-4)))
	}
	// Specials: ±0, ±Inf, NaN and a weight 0 (0·Inf must give NaN).
	special := []F{0, F(math.Copysign(0, -1)), F(math.Inf(1)), F(math.Inf(-1)), F(math.NaN())}
	for i := 0; i < len(src); i += 13 {
		src[i] = special[(i/13)%len(special)]
	}
	offs := make([]int, k)
	w := make([]F, k)
	for j := range offs {
		offs[j] = rng.Intn(rows)*n + rng.Intn(5)
		if offs[j]+n > len(src) {
			offs[j] = len(src) - n
		}
		w[j] = F(rng.Float64())
		if j == 1 {
			w[j] = 0
		}
	}
	got, want := make([]F, n), make([]F, n)
	for i := range got {
		got[i] = F(math.NaN()) // every element must be written
	}
	accRows(got, src, offs, w)
	accRowsRef(want, src, offs, w)
	for i := range want {
		g, wv := float64(got[i]), float64(want[i])
		if math.IsNaN(wv) && math.IsNaN(g) {
			continue
		}
		if g != wv || math.Signbit(g) != math.Signbit(wv) {
			t.Fatalf("%T k=%d n=%d: d[%d] = %v, want %v (bitwise)", got[0], k, n, i, g, wv)
		}
	}
}
