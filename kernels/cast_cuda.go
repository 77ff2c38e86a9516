//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Dtype conversion on the device: the launcher of cast.cuh's kernels (CPU twin: cast.go).

func init() {
	kernelNames = append(kernelNames, "convert_f32_bf16", "convert_bf16_f32", "convert_f32_f64", "convert_f64_f32")
}

// Convert writes out[i] = in[i] converted from dtype from to dtype to (rounded to nearest
// even): float32 ↔ bfloat16 and float32 ↔ float64.
func (c *CUDA) Convert(from, to DType, out, in cu.DevicePtr, n int64) error {
	ok := (from == F32 && (to == BF16 || to == F64)) || (to == F32 && (from == BF16 || from == F64))
	if !ok {
		return fmt.Errorf("gomoe: device conversion from %v to %v is not supported", from, to)
	}
	return c.do(func() error {
		return c.launch("convert_"+from.suffix()+"_"+to.suffix(), ewiseGrid(n, max(from.Size(), to.Size())), 256, 0, *new(args).p(in).p(out).l(n))
	})
}
