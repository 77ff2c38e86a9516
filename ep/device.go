package ep

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// deviceBackend lets the ep ops move values that live in GPU memory (package device's engine)
// with a device communicator (NCCL), without copying the rows through the host. The default
// build registers none: every value is a host value. The gomoecuda build registers one from
// device_cuda.go.
//
// Plans on the device are copied to the host where the ops need their counts (the plan op, and
// each exchange for its block lists): that is the documented host sync of expert parallelism.
type deviceBackend interface {
	// Owns reports whether v lives in device memory.
	Owns(v G.Value) bool
	// Buffer describes a device value as a Buffer of rows of its last dimension.
	Buffer(v G.Value) (Buffer, error)
	// Zeros allocates a zeroed device tensor on the device of like.
	Zeros(like G.Value, dt tensor.Dtype, shape ...int) (G.Value, error)
	// ToHost waits for the device and returns a host copy of v, or an error if the device's
	// kernels flagged bad input (an expert id out of range, a NaN score) before the copy.
	ToHost(v G.Value) (*tensor.Dense, error)
	// FromHost returns a device copy of the host tensor h on the device of like.
	FromHost(like G.Value, h *tensor.Dense) (G.Value, error)
	// Add adds src into dst on the device (dst += src).
	Add(dst, src G.Value) error
}

// device is the registered device backend, nil in the default build.
var device deviceBackend

// onDevice reports whether v is a device value.
func onDevice(v G.Value) bool { return device != nil && v != nil && device.Owns(v) }
