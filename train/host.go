package train

import (
	"unsafe"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
)

// hostData is the backing slice of the host tensor d: []float32, []float64 or
// []bfloat16.BFloat16 (nil for another dtype), whatever its shape. (Data() returns the value
// itself, not a slice, for a scalar-shaped tensor, and a copy of it.)
func hostData(d *tensor.Dense) any {
	switch d.Dtype() {
	case tensor.Float32:
		return d.Float32s()
	case tensor.Float64:
		return d.Float64s()
	case bfloat16.Dtype:
		raw := d.Header.Raw
		if len(raw) < 2 {
			return []bfloat16.BFloat16{}
		}
		return unsafe.Slice((*bfloat16.BFloat16)(unsafe.Pointer(unsafe.SliceData(raw))), len(raw)/2)
	}
	return nil
}

// bf16Data is hostData of a bfloat16 tensor.
func bf16Data(d *tensor.Dense) []bfloat16.BFloat16 {
	s, _ := hostData(d).([]bfloat16.BFloat16)
	return s
}
