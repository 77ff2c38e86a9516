package kernels

import (
	"fmt"

	"github.com/gomoe/gomoe/bfloat16"
)

// Dtype conversion on the CPU, the kernels of op.Cast. The CUDA twin is (*CUDA).Convert
// (cast_cuda.go, kernels in cast.cuh); both round to nearest even, so they agree bit for bit,
// NaNs included: to bfloat16 every NaN becomes bfloat16.NaN on both, and float32 ↔ float64
// keep a NaN's sign and payload on both (TestCUDAConvertNaN).

// Cast writes out[i] = in[i] converted to D: float32 ↔ float64 (float64 to float32 rounded to
// nearest even; float32 to float64 exact).
func Cast[D, S float32 | float64](out []D, in []S) error {
	if len(out) != len(in) {
		return fmt.Errorf("gomoe: Cast: %d outputs for %d inputs", len(out), len(in))
	}
	if err := checkInPlace("Cast", []span{spanOf("out", out)}, []span{spanOf("in", in)}); err != nil {
		return err
	}
	for i, x := range in {
		out[i] = D(x)
	}
	return nil
}

// CastToBF16 writes out[i] = in[i] rounded to bfloat16 (nearest even).
func CastToBF16(out []bfloat16.BFloat16, in []float32) error {
	if len(out) != len(in) {
		return fmt.Errorf("gomoe: CastToBF16: %d outputs for %d inputs", len(out), len(in))
	}
	// Refused as Cast refuses all but an exact in-place call, which bfloat16 out, of another
	// width, cannot be: a partial overlap gave wrong values.
	if err := checkDisjoint("CastToBF16", []span{spanOf("out", out)}, []span{spanOf("in", in)}); err != nil {
		return err
	}
	return bfloat16.FromFloat32s(out, in)
}

// CastFromBF16 writes out[i] = in[i] widened to float32 (exact).
func CastFromBF16(out []float32, in []bfloat16.BFloat16) error {
	if len(out) != len(in) {
		return fmt.Errorf("gomoe: CastFromBF16: %d outputs for %d inputs", len(out), len(in))
	}
	if err := checkDisjoint("CastFromBF16", []span{spanOf("out", out)}, []span{spanOf("in", in)}); err != nil {
		return err
	}
	return bfloat16.ToFloat32s(out, in)
}
