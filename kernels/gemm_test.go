package kernels

import (
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/reftest"
)

// gemmCase runs Gemm on random operands with padded leading dimensions and checks every
// element of c against reftest.Gemm, and that c's padding is untouched.
func gemmCase[T float32 | float64](t *testing.T, rng *rand.Rand, tA, tB bool, m, n, k int, beta T) {
	t.Helper()
	pad := 3
	ar, ac := m, k
	if tA {
		ar, ac = k, m
	}
	br, bc := k, n
	if tB {
		br, bc = n, k
	}
	lda, ldb, ldc := ac+pad, bc+pad, n+pad
	a64, b64, c64 := gmmRand(rng, ar*lda), gmmRand(rng, br*ldb), gmmRand(rng, m*ldc)
	a, b, c := gmmConv[T](a64), gmmConv[T](b64), gmmConv[T](c64)
	if beta == 0 { // overwrite must not read c
		for i := range c {
			c[i] = T(math.NaN())
		}
	}
	ref, mag := reftest.Gemm(tA, tB, m, n, k, 1, to64(a), lda, to64(b), ldb, float64(beta), to64(c), ldc)
	if err := Gemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc); err != nil {
		t.Fatal(err)
	}
	eps := 0x1p-52
	if _, ok := any(beta).(float32); ok {
		eps = 0x1p-23
	}
	for i := 0; i < m; i++ {
		for j := 0; j < ldc; j++ {
			got := float64(c[i*ldc+j])
			if j >= n {
				if orig := T(c64[i*ldc+j]); c[i*ldc+j] != orig && !(beta == 0 && math.IsNaN(got)) {
					t.Fatalf("tA=%v tB=%v m=%d n=%d k=%d: padding c[%d,%d] changed to %v", tA, tB, m, n, k, i, j, got)
				}
				continue
			}
			want, tol := ref[i*ldc+j], float64(k+2)*eps*mag[i*ldc+j]
			if !(math.Abs(got-want) <= tol) {
				t.Fatalf("%s tA=%v tB=%v m=%d n=%d k=%d beta=%v: c[%d,%d] = %v, want %v ± %.3g", gemmKernel[T]().name, tA, tB, m, n, k, beta, i, j, got, want, tol)
			}
		}
	}
}

// gemmPaths returns the built-in kernel paths this CPU runs; the caller restores the default.
func gemmPaths(t *testing.T) []string {
	var paths []string
	for _, p := range []string{"go", "avx2", "avx512"} {
		if gemmSetPath(p) {
			paths = append(paths, p)
		}
	}
	gemmRestore(t)
	return paths
}

func gemmRestore(t *testing.T) {
	f32, f64 := gemmF32, gemmF64
	t.Cleanup(func() { gemmF32, gemmF64 = f32, f64 })
}

func TestGemmAgainstLoops(t *testing.T) {
	sizes := [][3]int{
		{0, 5, 3}, {4, 0, 3}, {3, 4, 0}, {1, 1, 1}, {7, 7, 7}, {17, 17, 17}, {1, 33, 5}, {33, 1, 5},
		{6, 16, 1}, {12, 32, 256}, {13, 33, 257}, {25, 40, 513}, {200, 70, 31}, {5, 1100, 9}, {193, 65, 300},
	}
	defer gemmRestore(t)
	paths := gemmPaths(t)
	for name := range gemmExtraPaths { // "openblas" under its build tag
		paths = append(paths, name)
	}
	for _, path := range paths {
		gemmSetPath(path)
		rng := rand.New(rand.NewSource(7))
		for si, s := range sizes {
			for ti, tr := range [][2]bool{{false, false}, {false, true}, {true, false}, {true, true}} {
				// One beta per size and form, rotating so that every form meets every beta.
				beta := []float64{0, 1, -0.5}[(si+ti)%3]
				gemmCase(t, rng, tr[0], tr[1], s[0], s[1], s[2], float32(beta))
				gemmCase(t, rng, tr[0], tr[1], s[0], s[1], s[2], beta)
			}
		}
	}
}

// Bitwise: Gemm's result does not depend on GOMAXPROCS or on the split into blocks (it equals
// gemmSerial), and the AVX2 and AVX-512 kernels give the same bits.
func TestGemmDeterministic(t *testing.T) {
	defer gemmRestore(t)
	paths := gemmPaths(t)
	rng := rand.New(rand.NewSource(3))
	for _, s := range [][3]int{{250, 300, 520}, {37, 1100, 100}} {
		m, n, k := s[0], s[1], s[2]
		for _, tr := range [][2]bool{{false, false}, {false, true}, {true, false}} {
			lda, ldb := k, n
			if tr[0] {
				lda = m
			}
			if tr[1] {
				ldb = k
			}
			a, b := gmmConv[float32](gmmRand(rng, m*k)), gmmConv[float32](gmmRand(rng, k*n))
			c0 := gmmConv[float32](gmmRand(rng, m*n))
			var asmRef []float32
			for _, path := range paths {
				gemmSetPath(path)
				serial := append([]float32(nil), c0...)
				gemmSerial(tr[0], tr[1], m, n, k, a, lda, b, ldb, 1, serial, n)
				if path != "go" {
					if asmRef == nil {
						asmRef = serial
					} else if i := firstDiff(asmRef, serial); i >= 0 {
						t.Fatalf("%v: %s differs from the other assembly kernel at %d", s, path, i)
					}
				}
				for _, procs := range []int{1, 2, 3, 8} {
					old := runtime.GOMAXPROCS(procs)
					c := append([]float32(nil), c0...)
					if err := Gemm(tr[0], tr[1], m, n, k, a, lda, b, ldb, 1, c, n); err != nil {
						t.Fatal(err)
					}
					runtime.GOMAXPROCS(old)
					if i := firstDiff(serial, c); i >= 0 {
						t.Fatalf("%v %s tA=%v tB=%v GOMAXPROCS=%d: element %d is %v, serial %v", s, path, tr[0], tr[1], procs, i, c[i], serial[i])
					}
				}
			}
		}
	}
}

func firstDiff[T float32 | float64](a, b []T) int { return reftest.FirstBitDiff(a, b) }

func ExampleGemm() {
	a := []float32{1, 2, 3, 4, 5, 6} // 2×3
	b := []float32{1, 0, 0, 1, 1, 1} // 3×2
	c := make([]float32, 4)
	if err := Gemm(false, false, 2, 2, 3, a, 3, b, 2, 0, c, 2); err != nil {
		fmt.Println(err)
	}
	fmt.Println(c)
	// Output: [4 5 10 11]
}

func TestGemmBadArgs(t *testing.T) {
	a, b, c := make([]float32, 6), make([]float32, 6), make([]float32, 4)
	for i := range c {
		c[i] = float32(i + 1)
	}
	for _, f := range []struct {
		name string
		call func() error
		want string
	}{
		{"negative m", func() error { return Gemm(false, false, -1, 2, 3, a, 3, b, 2, 0, c, 2) }, "m=-1 n=2 k=3"},
		{"lda below k", func() error { return Gemm(false, false, 2, 2, 3, a, 2, b, 2, 0, c, 2) }, "lda = 2, want >= 3"},
		{"short b", func() error { return Gemm(false, false, 2, 2, 3, a, 3, b[:5], 2, 0, c, 2) }, "b has 5 elements"},
		{"short transposed a", func() error { return Gemm(true, false, 2, 2, 3, a[:5], 2, b, 2, 0, c, 2) }, "a has 5 elements"},
		{"ldc below n", func() error { return Gemm(false, false, 2, 2, 3, a, 3, b, 2, 0, c, 1) }, "ldc = 1, want >= 2"},
		{"rows·ld wraps int", func() error { return Gemm(false, false, math.MaxInt/2, 2, 3, a, 3, b, 2, 0, c, 2) }, "a has 6 elements"},
	} {
		err := f.call()
		if err == nil || !strings.Contains(err.Error(), f.want) {
			t.Errorf("%s: %v, want an error containing %q", f.name, err, f.want)
		}
		for i := range c {
			if c[i] != float32(i+1) {
				t.Fatalf("%s: c changed: %v", f.name, c)
			}
		}
	}
	if err := Gemm(false, false, 2, 2, 3, a, 3, b, 2, 0, c, 2); err != nil {
		t.Errorf("valid arguments: %v", err)
	}
}

// TestGemmRejectsOverlap: a c that shares memory with the part of a or b the product reads is
// an error and nothing is written (it was computed in blocks while other blocks still read a
// or b: at 300×300×300 with c = a the result was wrong, with no error); buffers that lie
// side by side in one slice, or an a that k = 0 leaves unread, are accepted.
func TestGemmRejectsOverlap(t *testing.T) {
	const n = 4
	buf := func() []float64 {
		s := make([]float64, 4*n*n)
		for i := range s {
			s[i] = float64(i%7) - 3
		}
		return s
	}
	for _, c := range []struct {
		name string
		call func(s []float64) error
		want string // "" = accepted
	}{
		{"c is a", func(s []float64) error {
			return Gemm(false, false, n, n, n, s[:n*n], n, s[n*n:2*n*n], n, 0, s[:n*n], n)
		}, "Gemm: output c overlaps input a"},
		{"c is b", func(s []float64) error {
			return Gemm(false, false, n, n, n, s[:n*n], n, s[n*n:2*n*n], n, 1, s[n*n:2*n*n], n)
		}, "Gemm: output c overlaps input b"},
		{"c over a's last row", func(s []float64) error {
			return Gemm(false, false, n, n, n, s[:n*n], n, s[2*n*n:3*n*n], n, 0, s[n*n-1:2*n*n-1], n)
		}, "Gemm: output c overlaps input a"},
		{"c over transposed b", func(s []float64) error {
			return Gemm(false, true, n, n, n, s[:n*n], n, s[n*n+2:], n, 0, s[n*n:2*n*n], n)
		}, "Gemm: output c overlaps input b"},
		{"side by side", func(s []float64) error {
			return Gemm(false, false, n, n, n, s[:n*n], n, s[n*n:2*n*n], n, 0, s[2*n*n:], n)
		}, ""},
		{"k = 0 reads no a", func(s []float64) error { return Gemm(false, false, n, n, 0, s[:n*n], n, nil, n, 0, s[:n*n], n) }, ""},
		{"c between a's rows, one column shared", func(s []float64) error {
			return Gemm(false, false, n, n, n, s, 2*n, s[2*n*n:3*n*n], n, 0, s[n-1:], 2*n) // a's last column is c's first
		}, "Gemm: output c overlaps input a"},
		{"one-row a with a huge lda over c", func(s []float64) error {
			return Gemm(false, false, 1, n, 2*n, s[:2*n], math.MaxInt, s[2*n*n:4*n*n], n, 0, s[n:2*n], n) // ld·size wrapped around int64
		}, "Gemm: output c overlaps input a"},
		{"c between transposed b's rows, one element shared", func(s []float64) error {
			return Gemm(false, true, n, n, n, make([]float64, n*n), n, s[:(n-1)*2*n+n], 2*n, 0, s[(n-1)*2*n+n-1:], 2*n) // b's last element is c's first
		}, "Gemm: output c overlaps input b"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, before := buf(), buf()
			err := c.call(s)
			if c.want == "" {
				if err != nil {
					t.Fatalf("%v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("%v, want an error containing %q", err, c.want)
			}
			if i := firstDiff(s, before); i >= 0 {
				t.Fatalf("element %d written", i)
			}
		})
	}
}

// TestGemmInterleaved: c between a's rows in one buffer (an [a | c] layout with one leading
// dimension, or [c | a]) shares no element with a: Gemm computes it, on every kernel path, and
// leaves a as it was. The overlap check compared the two matrices' spans, which interleave, and
// refused it.
func TestGemmInterleaved(t *testing.T) {
	defer gemmRestore(t)
	for _, path := range gemmPaths(t) {
		gemmSetPath(path)
		rng := rand.New(rand.NewSource(11))
		for _, sz := range [][3]int{{2, 2, 2}, {7, 9, 5}, {33, 17, 40}, {200, 70, 31}} {
			m, n, k := sz[0], sz[1], sz[2]
			for _, cFirst := range []bool{false, true} {
				ld := k + n // a row: k elements of a and n of c
				buf := make([]float64, m*ld)
				for i := range buf {
					buf[i] = rng.NormFloat64()
				}
				b := make([]float64, k*n)
				for i := range b {
					b[i] = rng.NormFloat64()
				}
				aOff, cOff := 0, k
				if cFirst {
					aOff, cOff = n, 0
				}
				before := append([]float64(nil), buf...)
				if err := Gemm(false, false, m, n, k, buf[aOff:], ld, b, n, 0, buf[cOff:], ld); err != nil {
					t.Fatalf("%s %v c first %v: %v", path, sz, cFirst, err)
				}
				for i := range m {
					for j := range k {
						if buf[i*ld+aOff+j] != before[i*ld+aOff+j] {
							t.Fatalf("%s %v: a[%d,%d] changed", path, sz, i, j)
						}
					}
					for j := range n {
						want := 0.0
						for p := range k {
							want += before[i*ld+aOff+p] * b[p*n+j]
						}
						if got := buf[i*ld+cOff+j]; math.Abs(got-want) > 1e-12*float64(k+1)*(1+math.Abs(want)) {
							t.Fatalf("%s %v c first %v: c[%d,%d] = %v, want %v", path, sz, cFirst, i, j, got, want)
						}
					}
				}
			}
		}
	}
}
