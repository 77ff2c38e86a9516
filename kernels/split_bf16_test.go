package kernels_test

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/bfloat16"
	. "github.com/gomoe/gomoe/kernels"
)

// splitCheck checks SplitBF16Pieces(v): the pieces add up to v exactly (summed in float64),
// and each is no larger than its bound.
func splitCheck(t *testing.T, v float32) {
	t.Helper()
	p0, p1, p2 := SplitBF16Pieces(v)
	if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
		if p1 != 0 || p2 != 0 || math.Float32bits(p0.Float32()) != math.Float32bits(bfloat16.FromFloat32(v).Float32()) {
			t.Fatalf("split(%v) = %v, %v, %v; want v's bfloat16, 0, 0", v, p0, p1, p2)
		}
		return
	}
	sum := p0.Float64() + p1.Float64() + p2.Float64()
	if sum != float64(v) {
		t.Fatalf("split(%v) = %v + %v + %v = %v, want exactly v", v, p0, p1, p2, sum)
	}
	a := math.Abs(float64(v))
	if !(math.Abs(p1.Float64()) <= a*0x1p-7) || !(math.Abs(p2.Float64()) <= a*0x1p-15) {
		t.Fatalf("split(%v) = %v, %v, %v: the smaller pieces are too large", v, p0, p1, p2)
	}
}

// TestSplitBF16Pieces: for special values and random float32 values of every magnitude from
// 2⁻¹⁰⁰ to 2¹²⁷, the three pieces are exact and decreasing.
func TestSplitBF16Pieces(t *testing.T) {
	for _, tc := range []struct {
		name       string
		v          float32
		p0, p1, p2 float32
	}{
		{"one", 1, 1, 0, 0},
		{"zero", 0, 0, 0, 0},
		{"1+2^-8 rounds down to 1 (a tie, to even)", 1 + 0x1p-8, 1, 0x1p-8, 0},
		{"1+2^-8+2^-20 rounds up", 1 + 0x1p-8 + 0x1p-20, 1 + 0x1p-7, -0x1p-8, 0x1p-20},
		{"largest float32 truncates", math.MaxFloat32, 0x1.fep127, 0x1p120, -0x1p104},
		// -1/3 in float32 is -0x1.555556p-2: 1.0101011 rounded up, then 2^-11·1.0101011 (the
		// remainder 0.000651031... rounded), then the rest, -0x1.580000p-20.
		{"-1/3", -1.0 / 3, -0x1.56p-2, 0x1.56p-11, -0x1.58p-20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p0, p1, p2 := SplitBF16Pieces(tc.v)
			if p0.Float32() != tc.p0 || p1.Float32() != tc.p1 || p2.Float32() != tc.p2 {
				t.Fatalf("split(%v) = %v, %v, %v; want %v, %v, %v", tc.v, p0, p1, p2, tc.p0, tc.p1, tc.p2)
			}
			splitCheck(t, tc.v)
		})
	}
	for _, v := range []float32{float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), float32(math.Copysign(0, -1))} {
		splitCheck(t, v)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 200000; i++ {
		m := float32(1 + rng.Float64())
		e := rng.IntN(228) - 100
		v := m * float32(math.Ldexp(1, e))
		if rng.IntN(2) == 0 {
			v = -v
		}
		splitCheck(t, v)
	}
}

// TestSplitBF16Layout: both layouts put each named piece where its strides say and leave the
// rest of the output alone.
func TestSplitBF16Layout(t *testing.T) {
	in := []float32{1 + 0x1p-8 + 0x1p-20, -1.0 / 3, 2, 0.1, 3, -5.5}
	const rows, cols = 2, 3
	pieces := func(v float32) [3]bfloat16.BFloat16 {
		p0, p1, p2 := SplitBF16Pieces(v)
		return [3]bfloat16.BFloat16{p0, p1, p2}
	}
	const sentinel = bfloat16.BFloat16(0x7777)
	for _, tc := range []struct {
		name                               string
		rows, cols, rowStride, pieceStride int
		pattern                            []int
	}{
		{"pieces side by side in each row", rows, cols, 2*3 + 1, cols, []int{2, 0}},
		{"whole pieces apart", 1, rows * cols, 0, rows*cols + 2, []int{0, 1, 2, 1}},
		{"six pairs' pattern", rows, cols, 6 * cols, cols, []int{2, 0, 1, 1, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := (tc.rows-1)*tc.rowStride + (len(tc.pattern)-1)*tc.pieceStride + tc.cols + 3
			out := make([]bfloat16.BFloat16, n)
			for i := range out {
				out[i] = sentinel
			}
			if err := SplitBF16(out, in, tc.rows, tc.cols, tc.rowStride, tc.pieceStride, tc.pattern); err != nil {
				t.Fatal(err)
			}
			want := make([]bfloat16.BFloat16, n)
			for i := range want {
				want[i] = sentinel
			}
			for r := 0; r < tc.rows; r++ {
				for c := 0; c < tc.cols; c++ {
					p := pieces(in[r*tc.cols+c])
					for j, k := range tc.pattern {
						want[r*tc.rowStride+j*tc.pieceStride+c] = p[k]
					}
				}
			}
			for i := range want {
				if out[i] != want[i] {
					t.Fatalf("out[%d] = %#x, want %#x", i, uint16(out[i]), uint16(want[i]))
				}
			}
		})
	}
}

// TestSplitBF16Errors: bad arguments give errors and write nothing.
func TestSplitBF16Errors(t *testing.T) {
	in := make([]float32, 6)
	for _, tc := range []struct {
		name                               string
		nOut                               int
		rows, cols, rowStride, pieceStride int
		pattern                            []int
		msg                                string
	}{
		{"no rows", 100, 0, 3, 3, 3, []int{0}, "shape"},
		{"no pieces", 100, 2, 3, 3, 3, nil, "pieces"},
		{"seven pieces", 100, 1, 3, 0, 3, []int{0, 0, 0, 0, 0, 0, 0}, "pieces"},
		{"piece 3", 100, 1, 3, 0, 3, []int{3}, "piece 3"},
		{"negative piece", 100, 1, 3, 0, 3, []int{-1}, "piece -1"},
		{"pieces overlap", 100, 2, 3, 6, 2, []int{0, 1}, "overlap"},
		{"rows overlap", 100, 2, 3, 5, 3, []int{0, 1}, "overlap"},
		{"short input", 100, 3, 3, 9, 3, []int{0}, "inputs"},
		{"short output", 10, 2, 3, 6, 3, []int{0, 1}, "outputs"},
		{"huge piece stride", 100, 2, 2, 0, math.MaxInt / 4, []int{0, 1, 2, 0, 1, 2}, "too large"},
		{"huge row stride", 100, 1 << 30, 2, 1 << 40, 2, []int{0}, "too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := make([]bfloat16.BFloat16, tc.nOut)
			err := SplitBF16(out, in, tc.rows, tc.cols, tc.rowStride, tc.pieceStride, tc.pattern)
			if err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want one about %q", err, tc.msg)
			}
			for i, v := range out {
				if v != 0 {
					t.Fatalf("out[%d] written: %v", i, v)
				}
			}
		})
	}
}
