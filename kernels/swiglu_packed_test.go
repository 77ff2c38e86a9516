package kernels

import (
	"math"
	"math/rand"
	"testing"
)

// TestSwiGLUPacked: the packed SwiGLU against the float64 formulas on each row's halves
// (forward within 4·2⁻²⁴ relative in float32, backward within 6·2⁻²⁴ of the magnitude of its
// terms; float64 within a few 2⁻⁵³), and bit for bit against the two-input kernels on the
// halves copied apart, on one-column rows, odd widths and a size that splits over goroutines.
func TestSwiGLUPacked(t *testing.T) {
	for _, c := range []struct{ rows, f int }{{1, 1}, {3, 1}, {5, 7}, {2, 8}, {33, 96}, {3 * actBlock / 64, 64}} {
		t.Run("", func(t *testing.T) {
			checkPacked[float32](t, c.rows, c.f, 6*0x1p-24)
			checkPacked[float64](t, c.rows, c.f, 8*0x1p-53)
		})
	}
}

func checkPacked[F float32 | float64](t *testing.T, rows, f int, tol float64) {
	t.Helper()
	rng := rand.New(rand.NewSource(int64(rows*1000 + f)))
	n := rows * f
	z, dy := make([]F, 2*n), make([]F, n)
	a, b := make([]F, n), make([]F, n)
	for r := 0; r < rows; r++ {
		for c := 0; c < f; c++ {
			x, v := F(rng.NormFloat64()*4), F(rng.NormFloat64())
			z[2*r*f+c], z[2*r*f+f+c] = x, v
			a[r*f+c], b[r*f+c] = x, v
			dy[r*f+c] = F(rng.NormFloat64())
		}
	}
	y, dz := make([]F, n), make([]F, 2*n)
	if err := SwiGLUPackedForward(y, z, f); err != nil {
		t.Fatal(err)
	}
	if err := SwiGLUPackedBackward(dz, z, dy, f); err != nil {
		t.Fatal(err)
	}
	near := func(what string, i int, got F, want, mag float64) {
		t.Helper()
		if !(math.Abs(float64(got)-want) <= tol*mag+0x1p-147) {
			t.Fatalf("rows=%d f=%d %T: %s[%d] = %v, want %v", rows, f, got, what, i, got, want)
		}
	}
	for i := range y {
		r, c := i/f, i%f
		x, v, g := float64(z[2*r*f+c]), float64(z[2*r*f+f+c]), float64(dy[i])
		s := sigmoid(x)
		near("y", i, y[i], x*s*v, math.Abs(x*s*v))
		da := g * v * s * (1 + x*(1-s))
		near("da", i, dz[2*r*f+c], da, math.Abs(g*v*s)*(1+math.Abs(x*(1-s))))
		near("db", i, dz[2*r*f+f+c], g*x*s, math.Abs(g*x*s))
	}
	// The same bits as the two-input kernels on the separated halves.
	y2, da, db := make([]F, n), make([]F, n), make([]F, n)
	if err := ActivationForward(SwiGLU, y2, a, b); err != nil {
		t.Fatal(err)
	}
	if err := ActivationBackward(SwiGLU, 0, da, a, b, nil, dy); err != nil {
		t.Fatal(err)
	}
	if err := ActivationBackward(SwiGLU, 1, db, a, b, nil, dy); err != nil {
		t.Fatal(err)
	}
	for i := range y {
		r, c := i/f, i%f
		if y[i] != y2[i] || dz[2*r*f+c] != da[i] || dz[2*r*f+f+c] != db[i] {
			t.Fatalf("rows=%d f=%d: element %d: packed (%v, %v, %v), two-input (%v, %v, %v)",
				rows, f, i, y[i], dz[2*r*f+c], dz[2*r*f+f+c], y2[i], da[i], db[i])
		}
	}
}

// TestSwiGLUPackedBadInput: lengths that are not rows of f and 2f, f < 1 and overlapping
// outputs are errors that leave the output untouched.
func TestSwiGLUPackedBadInput(t *testing.T) {
	z := make([]float32, 12)
	for i := range z {
		z[i] = float32(i)
	}
	out := []float32{-1, -1, -1, -1, -1, -1}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"f=0", SwiGLUPackedForward(out, z, 0)},
		{"f=-3", SwiGLUPackedForward(out, z, -3)},
		{"f=4 does not divide 6", SwiGLUPackedForward(out, z, 4)},
		{"z too short", SwiGLUPackedForward(out, z[:10], 3)},
		{"out inside z", SwiGLUPackedForward(z[:6], z, 3)},
		{"backward dz short", SwiGLUPackedBackward(make([]float32, 11), z, out, 3)},
		{"backward dz is z", SwiGLUPackedBackward(z, z, out, 3)},
		{"backward dy too long", SwiGLUPackedBackward(make([]float32, 12), z, make([]float32, 7), 3)},
	} {
		if c.err == nil {
			t.Errorf("%s: no error", c.name)
		}
	}
	for i, v := range out {
		if v != -1 {
			t.Fatalf("out[%d] = %v after failed calls, want -1", i, v)
		}
	}
}

// BenchmarkSwiGLUPacked times the packed SwiGLU at the CPU layer benchmark's rows (T1024 K2,
// F256) in float32: forward bytes 3·rows·F·4 (z read, h written), backward 5·rows·F·4 (z and dy
// read, dz written), against a copy of as many bytes.
func BenchmarkSwiGLUPacked(b *testing.B) {
	const rows, f = 2048, 256
	rng := rand.New(rand.NewSource(1))
	z, dy := make([]float32, 2*rows*f), make([]float32, rows*f)
	for i := range z {
		z[i] = float32(rng.NormFloat64() * 3)
	}
	for i := range dy {
		dy[i] = float32(rng.NormFloat64())
	}
	h, dz := make([]float32, rows*f), make([]float32, 2*rows*f)
	b.Run("fwd", func(b *testing.B) {
		for b.Loop() {
			if err := SwiGLUPackedForward(h, z, f); err != nil {
				b.Fatal(err)
			}
		}
		report(b, 3*rows*f*4)
	})
	b.Run("bwd", func(b *testing.B) {
		for b.Loop() {
			if err := SwiGLUPackedBackward(dz, z, dy, f); err != nil {
				b.Fatal(err)
			}
		}
		report(b, 5*rows*f*4)
	})
}
