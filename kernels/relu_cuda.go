//go:build gomoecuda

package kernels

import "gorgonia.org/cu"

// CUDA twins of relu.go (kernels in relu.cuh). Like the other launchers they enqueue on the default
// stream and never wait. Every launcher takes float32 or float64 data.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "relu_fwd_"+s, "relu_bwd_"+s)
	}
}

// ReLU writes y = max(x, 0) for n elements (NaN stays NaN).
func (c *CUDA) ReLU(d DType, y, x cu.DevicePtr, n int64) error {
	if err := nnCheck("ReLU", d, n, 1); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("relu_fwd_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(x).p(y).l(n))
	})
}

// ReLUBackward writes dx = dy where x > 0, else 0, for n elements.
func (c *CUDA) ReLUBackward(d DType, dx, x, dy cu.DevicePtr, n int64) error {
	if err := nnCheck("ReLUBackward", d, n, 1); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("relu_bwd_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(x).p(dy).p(dx).l(n))
	})
}
