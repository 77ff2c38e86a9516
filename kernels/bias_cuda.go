//go:build gomoecuda

package kernels

import "gorgonia.org/cu"

// CUDA twins of bias.go (kernels in bias.cuh). Like the other launchers they enqueue on the default
// stream and never wait. Every launcher takes float32 or float64 data.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "bias_add_"+s, "col_sum_"+s)
	}
}

// BiasAdd writes y[r,c] = x[r,c] + b[c] for x, y [rows, cols] and b [cols].
func (c *CUDA) BiasAdd(d DType, y, x, b cu.DevicePtr, rows int64, cols int) error {
	if err := nnCheck("BiasAdd", d, rows, cols); err != nil {
		return err
	}
	n := rows * int64(cols)
	return c.do(func() error {
		return c.launch("bias_add_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(x).p(b).p(y).l(n).i(cols))
	})
}

// ColSum writes out[c] = Σ_r x[r,c] for x [rows, cols] (double in row order, like the CPU:
// the result is bitwise the CPU's).
func (c *CUDA) ColSum(d DType, out, x cu.DevicePtr, rows int64, cols int) error {
	if err := nnCheck("ColSum", d, rows, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("col_sum_"+d.suffix(), blocksFor(int64(cols), 256), 256, 0, *new(args).p(x).p(out).l(rows).i(cols))
	})
}
