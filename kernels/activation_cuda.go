//go:build gomoecuda

package kernels

import (
	"fmt"
	"math"

	"gorgonia.org/cu"
)

// The activations on the device: the launchers of activation.cuh's kernels (CPU twin:
// activation.go).

func init() {
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "pw_fwd_"+s, "pw_bwd_"+s)
	}
}

// ActivationForward writes out = kind(a[, b]) for n elements (b: SwiGLU only).
func (c *CUDA) ActivationForward(d DType, kind Activation, out, a, b cu.DevicePtr, n int64) error {
	if !d.valid() || !kind.valid() {
		return fmt.Errorf("gomoe: device activation: dtype %v, kind %d", d, int(kind))
	}
	return c.do(func() error {
		return c.launch("pw_fwd_"+d.suffix(), ewiseGrid(n, d.Size()), 256, 0, *new(args).i(int(kind)).p(a).p(b).p(out).l(n))
	})
}

// ActivationBackward writes into out the gradient of input which (see the CPU
// ActivationBackward) for n elements.
func (c *CUDA) ActivationBackward(d DType, kind Activation, which int, out, a, b, y, dy cu.DevicePtr, n int64) error {
	if !d.valid() || !kind.valid() || which < 0 || which >= kind.Inputs() {
		return fmt.Errorf("gomoe: device activation gradient: dtype %v, kind %d, input %d", d, int(kind), which)
	}
	return c.do(func() error {
		return c.launch("pw_bwd_"+d.suffix(), ewiseGrid(n, d.Size()), 256, 0,
			*new(args).i(int(kind)).i(which).p(a).p(b).p(y).p(dy).p(out).l(n))
	})
}

func init() {
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "swiglu_packed_fwd_"+s, "swiglu_packed_bwd_"+s)
	}
}

// SwiGLUPackedForward writes out [rows,f] = silu(z[:, :f])·z[:, f:] for z [rows,2f] (the CPU
// SwiGLUPackedForward).
func (c *CUDA) SwiGLUPackedForward(d DType, out, z cu.DevicePtr, rows int64, f int) error {
	if !d.valid() || rows < 1 || f < 1 || f > math.MaxInt32/2 {
		return fmt.Errorf("gomoe: device packed SwiGLU: dtype %v, rows %d, f %d", d, rows, f)
	}
	return c.do(func() error {
		return c.launch("swiglu_packed_fwd_"+d.suffix(), ewiseGrid(rows*int64(f), d.Size()), 256, 0,
			*new(args).p(z).p(out).l(rows).i(f))
	})
}

// SwiGLUPackedBackward writes dz [rows,2f], both halves, from z [rows,2f] and dy [rows,f] (the
// CPU SwiGLUPackedBackward).
func (c *CUDA) SwiGLUPackedBackward(d DType, dz, z, dy cu.DevicePtr, rows int64, f int) error {
	if !d.valid() || rows < 1 || f < 1 || f > math.MaxInt32/2 {
		return fmt.Errorf("gomoe: device packed SwiGLU gradient: dtype %v, rows %d, f %d", d, rows, f)
	}
	return c.do(func() error {
		return c.launch("swiglu_packed_bwd_"+d.suffix(), ewiseGrid(rows*int64(f), d.Size()), 256, 0,
			*new(args).p(z).p(dy).p(dz).l(rows).i(f))
	})
}
