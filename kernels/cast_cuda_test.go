//go:build gomoecuda

package kernels_test

import (
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/bfloat16"
	. "github.com/gomoe/gomoe/kernels"
)

// TestCUDAConvert: every device conversion (float32 ↔ bfloat16, float32 ↔ float64) equals Go's
// round-to-nearest-even conversion bit for bit, with the input and the output each 16-byte
// aligned or one element off (the kernel's vector and one-at-a-time paths), and an odd length.
func TestCUDAConvert(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const n = 1031
	src := trRand(rng, n, 10)
	src[0], src[1], src[2] = math.Inf(1), 1e-40, math.Copysign(0, -1) // infinity, a float32 subnormal, -0
	for _, c := range [][2]DType{{F32, BF16}, {BF16, F32}, {F32, F64}, {F64, F32}} {
		from, to := c[0], c[1]
		// the input as the source dtype holds it: float32 values for F32, bfloat16 ones for BF16
		in := make([]float64, n)
		for i, x := range src {
			switch from {
			case F32:
				in[i] = float64(float32(x))
			case BF16:
				in[i] = float64(bfloat16.FromFloat32(float32(x)).Float32())
			default:
				in[i] = x
			}
		}
		want := cuBits(cuElems(to, in)) // Go's conversion, rounded to nearest even
		for _, off := range [][2]int{{0, 0}, {1, 1}, {0, 1}, {1, 0}} {
			b := cuUploadAny(t, cuElems(from, append(make([]float64, off[0]), in...)))
			out := cuAlloc(t, int64(to.Size()*(n+1)))
			cuMust(t, testCUDA.Convert(from, to, out.p+cu.DevicePtr(off[1]*to.Size()), b.p+cu.DevicePtr(off[0]*from.Size()), n))
			got := cuBits(cuDownloadAs(t, to, out, n+1))[off[1]:]
			for i := 0; i < n; i++ {
				if got[i] != want[i] {
					t.Fatalf("%v→%v offsets %v: [%d] = %#x, want %#x (input %v)", from, to, off, i, got[i], want[i], in[i])
				}
			}
		}
	}
}

// TestCUDAConvertNaN: NaNs of either sign, quiet and signalling, with payloads high and low,
// convert with the CPU's bits: to bfloat16 the canonical bfloat16.NaN; a bfloat16 NaN widens to
// float32 with its bits shifted, as BFloat16.Float32; float32 ↔ float64 keep the sign and the
// payload (quieted), as Go's conversions do on amd64.
func TestCUDAConvertNaN(t *testing.T) {
	f32 := []uint32{0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0x7fffffff, 0xffffffff, 0x7fc12345}
	in32 := make([]float32, len(f32))
	for i, b := range f32 {
		in32[i] = math.Float32frombits(b)
	}
	in64 := []float64{math.Float64frombits(0x7ff8000000000000), math.Float64frombits(0xfff0000000000001), math.Float64frombits(0x7ff0000012345678), math.Float64frombits(0xffffffffffffffff)}
	in16 := []bfloat16.BFloat16{0x7fc0, 0xffc0, 0x7f81, 0xff81, 0x7fff, 0xffff}
	convert := func(from, to DType, in any, n int) any {
		b := cuUploadAny(t, in)
		out := cuAlloc(t, int64(to.Size()*n))
		cuMust(t, testCUDA.Convert(from, to, out.p, b.p, int64(n)))
		return cuDownloadAs(t, to, out, n)
	}
	got16 := convert(F32, BF16, in32, len(in32)).([]bfloat16.BFloat16)
	for i, f := range in32 {
		if want := bfloat16.FromFloat32(f); got16[i] != want {
			t.Errorf("float32 %#08x → bfloat16: device %#04x, CPU %#04x", f32[i], uint16(got16[i]), uint16(want))
		}
	}
	got32 := convert(BF16, F32, in16, len(in16)).([]float32)
	for i, h := range in16 {
		if g, w := math.Float32bits(got32[i]), math.Float32bits(h.Float32()); g != w {
			t.Errorf("bfloat16 %#04x → float32: device %#08x, CPU %#08x", uint16(h), g, w)
		}
	}
	got64 := convert(F32, F64, in32, len(in32)).([]float64)
	for i, f := range in32 {
		if g, w := math.Float64bits(got64[i]), math.Float64bits(float64(f)); g != w {
			t.Errorf("float32 %#08x → float64: device %#016x, CPU %#016x", f32[i], g, w)
		}
	}
	got3 := convert(F64, F32, in64, len(in64)).([]float32)
	for i, d := range in64 {
		if g, w := math.Float32bits(got3[i]), math.Float32bits(float32(d)); g != w {
			t.Errorf("float64 %#016x → float32: device %#08x, CPU %#08x", math.Float64bits(d), g, w)
		}
	}
}
