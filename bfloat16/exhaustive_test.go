package bfloat16

import (
	"math"
	"math/big"
	"math/rand/v2"
	"sync"
	"testing"
)

// val is the value of positive bf16 code c, with 0x7f80 standing for 2^128 (unbounded exponent).
func val(c uint16) float64 {
	if c == 0x7f80 {
		return 0x1p128
	}
	return float64(math.Float32frombits(uint32(c) << 16))
}

// refExact rounds f (float64) to bf16 with exact big.Float comparisons.
func refExact(f float64) uint16 {
	if f != f {
		return 0x7fff
	}
	var s uint16
	if math.Signbit(f) {
		s = 0x8000
	}
	a := math.Abs(f)
	if a >= 0x1p128 {
		return s | 0x7f80
	}
	lo, hi := 0, 0x7f80 // val(lo) <= a < val(hi)
	for hi-lo > 1 {
		m := (lo + hi) / 2
		if val(uint16(m)) <= a {
			lo = m
		} else {
			hi = m
		}
	}
	A := new(big.Float).SetPrec(4000).SetFloat64(a)
	L := new(big.Float).SetPrec(4000).SetFloat64(val(uint16(lo)))
	H := new(big.Float).SetPrec(4000).SetFloat64(val(uint16(hi)))
	dl := new(big.Float).SetPrec(4000).Sub(A, L)
	dh := new(big.Float).SetPrec(4000).Sub(H, A)
	c := dl.Cmp(dh)
	r := lo
	if c > 0 || (c == 0 && lo&1 == 1) {
		r = hi
	}
	return s | uint16(r)
}

// ref32 rounds a float32 with float64 arithmetic (exact for the differences involved).
func ref32(f float32) uint16 {
	if f != f {
		return 0x7fff
	}
	b := math.Float32bits(f)
	s := uint16(b>>16) & 0x8000
	a := float64(math.Abs(float64(f)))
	if math.IsInf(a, 0) {
		return s | 0x7f80
	}
	lo := uint16((b & 0x7fffffff) >> 16)
	hi := lo + 1
	dl, dh := a-val(lo), val(hi)-a
	if dh < dl || (dh == dl && lo&1 == 1) {
		return s | hi
	}
	return s | lo
}

func TestFromFloat32Exhaustive(t *testing.T) {
	if testing.Short() {
		t.Skip()
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	bad := 0
	for w := uint64(0); w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w << 28; i < (w+1)<<28; i++ {
				f := math.Float32frombits(uint32(i))
				if g, r := uint16(FromFloat32(f)), ref32(f); g != r {
					mu.Lock()
					if bad < 10 {
						t.Errorf("FromFloat32(%#08x) = %#04x, want %#04x", i, g, r)
					}
					bad++
					mu.Unlock()
				}
				if i&0xffff == 0x1234 { // spot-check the refs agree
					if r2 := refExact(float64(f)); r2 != ref32(f) {
						mu.Lock()
						t.Errorf("ref mismatch %#08x: %#04x vs %#04x", i, r2, ref32(f))
						mu.Unlock()
					}
				}
			}
		}()
	}
	wg.Wait()
	t.Logf("%d mismatches", bad)
}

func TestFromFloat64Ties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	bad := 0
	check := func(f float64) {
		if g, r := uint16(FromFloat64(f)), refExact(f); g != r {
			if bad < 20 {
				t.Errorf("FromFloat64(%v = %#016x) = %#04x, want %#04x", f, math.Float64bits(f), g, r)
			}
			bad++
		}
	}
	for c := 0; c < 1<<16; c++ {
		x := BFloat16(c).Float64()
		if x != x {
			continue
		}
		check(x)
		// midpoints and neighbours (in float64 and float32 ulps)
		var nx float64
		if c&0x7fff == 0x7f80 {
			continue
		} else if c&0x7fff == 0x7f7f {
			nx = math.Copysign(0x1p128, x)
		} else {
			nx = BFloat16(c + 1).Float64()
		}
		m := (x + nx) / 2
		check(m)
		for _, d := range []float64{1, 2, 3, 0x1p20, 0x1p28, 0x1p29, 0x1p30, 0x1p31} {
			u := math.Abs(m) * 0x1p-52 * d
			if m == 0 {
				u = 0x1p-1074 * d
			}
			check(m + u)
			check(m - u)
		}
		for k := 0; k < 8; k++ {
			check(math.Nextafter(m, math.Inf(1)))
			check(math.Nextafter(m, math.Inf(-1)))
			m = math.Nextafter(m, math.Inf(int(1-2*(k&1))))
		}
		for k := 0; k < 20; k++ {
			check(x + (nx-x)*rng.Float64())
		}
	}
	for i := 0; i < 2000000; i++ {
		check(math.Float64frombits(rng.Uint64()))
	}
	// tiny values
	for e := -1074; e < -120; e++ {
		for _, m := range []float64{1, 1.5, 1.25, 1.75, 1.0000001, 0.9999999} {
			check(math.Ldexp(m, e))
			check(-math.Ldexp(m, e))
		}
	}
	t.Logf("%d mismatches", bad)
}
