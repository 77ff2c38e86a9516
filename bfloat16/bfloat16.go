// Package bfloat16 provides the bfloat16 number type (1 sign bit, 8 exponent bits, 7 mantissa
// bits: the top half of a float32) and registers it with gorgonia.org/tensor as the Dtype
// [Dtype], so that tensors and Gorgonia graphs can hold bfloat16 data.
//
// gomoe's CUDA kernels take bfloat16 data with float32 probs and accumulate in float32. On the
// CPU the ops convert bfloat16 to float32, run the float32 kernels and round the result once,
// which gives the same bits as the GPU, NaN included: every NaN rounds to the canonical
// bfloat16 NaN 0x7fff, as CUDA's __float2bfloat16_rn gives it.
package bfloat16

import (
	"fmt"
	"math"
	"reflect"

	"gorgonia.org/tensor"
)

// BFloat16 is a bfloat16 number, stored as its 16 bits.
type BFloat16 uint16

// Dtype is the tensor.Dtype of BFloat16. It is registered with gorgonia.org/tensor as a float
// type when this package is imported.
var Dtype = tensor.Dtype{Type: reflect.TypeOf(BFloat16(0))}

func init() {
	tensor.RegisterFloat(Dtype)
}

// NaN is the canonical bfloat16 NaN, 0x7fff: what CUDA's conversion gives for every NaN
// (cuda_bf16.h's CUDART_NAN_BF16), so that a NaN has the same bits on the CPU and the GPU.
const NaN BFloat16 = 0x7fff

// FromFloat32 rounds f to the nearest bfloat16, ties to even; every NaN gives [NaN] (sign and
// payload are not kept); values too large round to ±Inf.
func FromFloat32(f float32) BFloat16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return NaN
	}
	b += 0x7fff + (b>>16)&1
	return BFloat16(b >> 16)
}

// FromFloat64 rounds f to the nearest bfloat16, ties to even, in one rounding. It is not
// FromFloat32(float32(f)): rounding to float32 first can land on a point halfway between two
// bfloat16 values that f is not on, and the second rounding then breaks that false tie to
// even (1 + 2⁻⁸ + 2⁻³⁰ would round down to 1 instead of up to 1 + 2⁻⁷). Every NaN gives [NaN];
// values too large round to ±Inf.
func FromFloat64(f float64) BFloat16 {
	g := float32(f) // 16 bits finer than bfloat16 at every scale
	b := math.Float32bits(g)
	if b&0xffff == 0x8000 && float64(g) != f && f == f { // a false tie: round toward f
		if math.Abs(f) > math.Abs(float64(g)) {
			return BFloat16(b>>16 + 1) // magnitude up (0x7f7f + 1 is Inf)
		}
		return BFloat16(b >> 16)
	}
	return FromFloat32(g)
}

// Float32 returns b as a float32 (exact).
func (b BFloat16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }

// Float64 returns b as a float64 (exact).
func (b BFloat16) Float64() float64 { return float64(b.Float32()) }

// String formats b like a float32.
func (b BFloat16) String() string { return fmt.Sprint(b.Float32()) }

// FromFloat32s rounds every src[i] into dst[i]. It returns an error if the lengths differ.
func FromFloat32s(dst []BFloat16, src []float32) error {
	if len(dst) != len(src) {
		return fmt.Errorf("bfloat16: FromFloat32s: dst has %d elements, src %d", len(dst), len(src))
	}
	for i, v := range src {
		dst[i] = FromFloat32(v)
	}
	return nil
}

// ToFloat32s widens every src[i] into dst[i]. It returns an error if the lengths differ.
func ToFloat32s(dst []float32, src []BFloat16) error {
	if len(dst) != len(src) {
		return fmt.Errorf("bfloat16: ToFloat32s: dst has %d elements, src %d", len(dst), len(src))
	}
	for i, v := range src {
		dst[i] = v.Float32()
	}
	return nil
}
