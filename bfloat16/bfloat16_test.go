package bfloat16

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"gorgonia.org/tensor"
)

// refRound rounds f to bfloat16 with math/big (8-bit precision, nearest even), independent of
// the bit trick in FromFloat32. Overflow past the largest bfloat16 goes to Inf.
func refRound(f float32) uint16 {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) || f == 0 {
		return uint16(math.Float32bits(f) >> 16)
	}
	x := new(big.Float).SetPrec(8).SetMode(big.ToNearestEven)
	x.SetFloat64(float64(f))
	r, _ := x.Float64()
	if math.Abs(r) >= 0x1p128 { // rounded past the largest finite bfloat16
		return uint16(math.Float32bits(float32(math.Inf(int(math.Copysign(1, r))))) >> 16)
	}
	r32 := float32(r)
	// subnormal float32 inputs: bfloat16 has the same exponent range, so round the bits.
	if math.Abs(float64(f)) < 0x1p-126 {
		b := math.Float32bits(f)
		lo := b & 0xffff
		hi := b >> 16
		if lo > 0x8000 || (lo == 0x8000 && hi&1 == 1) {
			hi++
		}
		return uint16(hi)
	}
	return uint16(math.Float32bits(r32) >> 16)
}

func TestFromFloat32(t *testing.T) {
	cases := []struct {
		in   float32
		want uint16
	}{
		{0, 0x0000},
		{float32(math.Copysign(0, -1)), 0x8000},
		{1, 0x3f80},
		{-2, 0xc000},
		{1 + 1.0/256, 0x3f80},                      // exactly halfway, even stays
		{1 + 3.0/256, 0x3f82},                      // halfway, odd rounds up
		{1 + 1.0/256 + 1.0/65536, 0x3f81},          // just above halfway
		{float32(math.Inf(1)), 0x7f80},             // +Inf
		{float32(math.Inf(-1)), 0xff80},            // -Inf
		{math.MaxFloat32, 0x7f80},                  // rounds past the largest bfloat16
		{math.Float32frombits(0x00000001), 0x0000}, // smallest subnormal rounds to 0
	}
	for _, c := range cases {
		if got := FromFloat32(c.in); uint16(got) != c.want {
			t.Errorf("FromFloat32(%g) = %#04x, want %#04x", c.in, uint16(got), c.want)
		}
	}
	// Every NaN, quiet or signalling, of either sign, with its payload anywhere (only in the
	// low 16 bits too, which plain rounding would carry into Inf), is the canonical 0x7fff, as
	// CUDA's __float2bfloat16_rn gives it.
	for _, b := range []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0x7fffffff, 0xffffffff, 0x7fc12345} {
		if got := FromFloat32(math.Float32frombits(b)); got != NaN || uint16(NaN) != 0x7fff {
			t.Errorf("FromFloat32(%#08x) = %#04x, want 0x7fff", b, uint16(got))
		}
	}
}

func TestFromFloat32Random(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200000; i++ {
		f := math.Float32frombits(rng.Uint32())
		if math.IsNaN(float64(f)) {
			continue
		}
		if got, want := uint16(FromFloat32(f)), refRound(f); got != want {
			t.Fatalf("FromFloat32(%g = %#08x) = %#04x, want %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for b := 0; b < 1<<16; b++ {
		x := BFloat16(b)
		f := x.Float32()
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := FromFloat32(f); got != x {
			t.Fatalf("FromFloat32(%#04x.Float32()) = %#04x", b, uint16(got))
		}
		if float64(f) != x.Float64() {
			t.Fatalf("Float64 of %#04x differs from Float32", b)
		}
	}
}

func TestSlices(t *testing.T) {
	src := []float32{1, -0.5, 3.140625, 1e-3}
	dst := make([]BFloat16, len(src))
	if err := FromFloat32s(dst, src); err != nil {
		t.Fatal(err)
	}
	back := make([]float32, len(src))
	if err := ToFloat32s(back, dst); err != nil {
		t.Fatal(err)
	}
	for i, v := range src {
		want := math.Float32frombits(uint32(refRound(v)) << 16)
		if back[i] != want {
			t.Errorf("round trip of %g = %g, want %g", v, back[i], want)
		}
	}
	if err := FromFloat32s(dst[:1], src); err == nil {
		t.Error("FromFloat32s with mismatched lengths: no error")
	}
	if err := ToFloat32s(back[:1], dst); err == nil {
		t.Error("ToFloat32s with mismatched lengths: no error")
	}
}

func TestDtype(t *testing.T) {
	if Dtype.Size() != 2 {
		t.Fatalf("Dtype.Size() = %d, want 2", Dtype.Size())
	}
	d := tensor.New(tensor.Of(Dtype), tensor.WithShape(2, 3))
	if d.Dtype() != Dtype {
		t.Fatalf("tensor dtype %v, want %v", d.Dtype(), Dtype)
	}
	data, ok := d.Data().([]BFloat16)
	if !ok || len(data) != 6 {
		t.Fatalf("Data() is %T of length %d, want []BFloat16 of 6", d.Data(), len(data))
	}
	data[4] = FromFloat32(2.5)
	if got := d.Data().([]BFloat16)[4].Float32(); got != 2.5 {
		t.Errorf("element 4 = %g, want 2.5", got)
	}
	if d.MemSize() != 12 {
		t.Errorf("MemSize() = %d, want 12", d.MemSize())
	}
	from := tensor.New(tensor.WithBacking([]BFloat16{1, 2}))
	if from.Dtype() != Dtype {
		t.Errorf("WithBacking([]BFloat16) dtype %v, want %v", from.Dtype(), Dtype)
	}
}

func ExampleFromFloat32() {
	b := FromFloat32(3.14159)
	fmt.Println(b, b.Float32() == 3.140625)
	// Output: 3.140625 true
}

// TestFromFloat64: one rounding from float64, not two through float32. Rounding to float32
// first lands some values on a point halfway between two bfloat16 values that they are not on,
// and ties-to-even then goes the wrong way; the wants below are the nearest bfloat16 of the
// float64 (IEEE 754, nearest even), next to exact ties and ordinary values.
func TestFromFloat64(t *testing.T) {
	top := 0x1p128 - 0x1p119 // halfway between the largest bfloat16 and 2¹²⁸
	for _, c := range []struct {
		in   float64
		want uint16
	}{
		{1 + 0x1p-8 + 0x1p-30, 0x3f81},   // just above a tie: up (through float32: 0x3f80)
		{1 + 0x1p-8 - 0x1p-30, 0x3f80},   // just below
		{1 + 0x1p-8, 0x3f80},             // the tie itself: even
		{-1 - 0x1p-8 - 0x1p-30, 0xbf81},  // the sign
		{1 + 3*0x1p-8 - 0x1p-30, 0x3f81}, // just below a tie: down (through float32: 0x3f82)
		{1 + 3*0x1p-8, 0x3f82},
		{1 + 3*0x1p-8 + 0x1p-30, 0x3f82},
		{top * (1 - 0x1p-40), 0x7f7f}, // below the overflow point: the largest (through float32: +Inf)
		{-top * (1 - 0x1p-40), 0xff7f},
		{top, 0x7f80}, // the overflow point itself rounds to even: +Inf
		{top * (1 + 0x1p-40), 0x7f80},
		{3 * 0x1p-134 * (1 - 0x1p-40), 0x0001}, // subnormal, just below a tie (through float32: 0x0002)
		{3 * 0x1p-134, 0x0002},
		{0x1p-134 * (1 + 0x1p-40), 0x0001}, // just above half the smallest subnormal
		{0x1p-134, 0x0000},
		{0x1p-1074, 0x0000},
		{-0x1p-1074, 0x8000},
		{math.Copysign(0, -1), 0x8000},
		{1.5, 0x3fc0},
		{1e300, 0x7f80},
		{math.Inf(-1), 0xff80},
	} {
		if got := FromFloat64(c.in); uint16(got) != c.want {
			t.Errorf("FromFloat64(%v = %#016x) = %#04x, want %#04x", c.in, math.Float64bits(c.in), uint16(got), c.want)
		}
	}
	if nan := FromFloat64(math.Float64frombits(0xfff0000000000001)); nan != NaN {
		t.Errorf("FromFloat64(-NaN with a low payload) = %#04x, want 0x7fff", uint16(nan))
	}
}
