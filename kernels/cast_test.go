package kernels

import (
	"math"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/gomoe/gomoe/bfloat16"
)

// TestCast: float64 → float32 rounds to nearest even, float32 → float64 and bfloat16 → float32
// are exact, float32 → bfloat16 rounds to nearest even; mismatched lengths are errors.
func TestCast(t *testing.T) {
	in := []float64{1 + 0x1p-24, 1 + 3*0x1p-24, -2.5, math.Inf(1)}
	f := make([]float32, 4)
	if err := Cast(f, in); err != nil {
		t.Fatal(err)
	}
	if want := []float32{1, 1 + 0x1p-22, -2.5, float32(math.Inf(1))}; f[0] != want[0] || f[1] != want[1] || f[2] != want[2] || f[3] != want[3] {
		t.Errorf("Cast to float32 = %v, want %v", f, want)
	}
	back := make([]float64, 4)
	if err := Cast(back, f); err != nil || back[1] != float64(f[1]) {
		t.Errorf("Cast to float64 = %v, %v", back, err)
	}
	b := make([]bfloat16.BFloat16, 2)
	if err := CastToBF16(b, []float32{1 + 0x1p-8, 1 + 3*0x1p-8}); err != nil {
		t.Fatal(err)
	}
	w := make([]float32, 2)
	if err := CastFromBF16(w, b); err != nil {
		t.Fatal(err)
	}
	if w[0] != 1 || w[1] != 1+0x1p-6 {
		t.Errorf("bfloat16 round trip = %v, want [1 %v]", w, 1+0x1p-6)
	}
	if err := Cast(f[:3], in); err == nil {
		t.Error("3 outputs for 4 inputs: no error")
	}
	// The bfloat16 casts used to return package bfloat16's error ("bfloat16: FromFloat32s: dst
	// has 2 elements, src 1"): no "gomoe: " prefix, and another function's name.
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"CastToBF16", CastToBF16(b, w[:1]), "gomoe: CastToBF16: 2 outputs for 1 inputs"},
		{"CastFromBF16", CastFromBF16(w, b[:1]), "gomoe: CastFromBF16: 2 outputs for 1 inputs"},
	} {
		if c.err == nil || c.err.Error() != c.want {
			t.Errorf("%s: %v, want %q", c.name, c.err, c.want)
		}
	}
}

// TestCastBF16Overlap: a bfloat16 cast or split whose output shares memory with its input is
// refused, the input unchanged (each write overwrote input not yet read: widening 1..8 in place
// gave 1 1 0 1 0 0 0 1, silently).
func TestCastBF16Overlap(t *testing.T) {
	buf := make([]float32, 8)
	narrow := unsafe.Slice((*bfloat16.BFloat16)(unsafe.Pointer(&buf[0])), 8) // buf's first half
	for i := range narrow {
		narrow[i] = bfloat16.FromFloat32(float32(i + 1))
	}
	before := append([]bfloat16.BFloat16(nil), narrow...)
	in := make([]float32, 12)
	for i := range in {
		in[i] = float32(i) + 0.5
	}
	wide := append([]float32(nil), in...)
	out := unsafe.Slice((*bfloat16.BFloat16)(unsafe.Pointer(&in[1])), 8) // from in[1] on
	for _, c := range []struct {
		name string
		err  error
	}{
		{"CastFromBF16", CastFromBF16(buf, narrow)},
		{"CastToBF16", CastToBF16(out, in[:8])},
		{"SplitBF16", SplitBF16(out, in[:4], 1, 4, 8, 4, []int{0, 1})},
	} {
		if c.err == nil || !strings.Contains(c.err.Error(), "overlaps input in in memory") {
			t.Errorf("%s with an output over its input: %v, want the overlap error", c.name, c.err)
		}
	}
	if !slices.Equal(narrow, before) || !slices.Equal(in, wide) {
		t.Errorf("a refused cast changed its input")
	}
}
