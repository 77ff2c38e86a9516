//go:build gomoecuda

package kernels

import "gorgonia.org/cu"

// CUDA twins of rmsnorm.go (kernels in rmsnorm.cuh). Like the other launchers they enqueue on the
// default stream and never wait. Every launcher takes float32 or float64 data.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "rms_fwd_"+s, "rms_bwd_"+s, "rms_inv_"+s, "rms_dgain_"+s)
	}
}

// RMSNorm writes y = x·r·gain row by row (r = 1/sqrt(mean(x²)+eps)) for x [rows, cols].
func (c *CUDA) RMSNorm(d DType, y, x, gain cu.DevicePtr, rows int64, cols int, eps float64) error {
	if err := nnCheck("RMSNorm", d, rows, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("rms_fwd_"+d.suffix(), rowGrid(rows), 256, 0, *new(args).p(x).p(gain).p(y).l(rows).i(cols).d(eps))
	})
}

// RMSNormBackward writes the gradient wrt x of RMSNorm (see the CPU RMSNormBackward).
func (c *CUDA) RMSNormBackward(d DType, dx, x, gain, dy cu.DevicePtr, rows int64, cols int, eps float64) error {
	if err := nnCheck("RMSNormBackward", d, rows, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("rms_bwd_"+d.suffix(), rowGrid(rows), 256, 0,
			*new(args).p(x).p(gain).p(dy).p(dx).l(rows).i(cols).d(eps))
	})
}

// RMSNormGainGrad writes dgain [cols] = Σ_rows dy·x·r; scratch holds rows float64s.
func (c *CUDA) RMSNormGainGrad(d DType, dgain, x, dy, scratch cu.DevicePtr, rows int64, cols int, eps float64) error {
	if err := nnCheck("RMSNormGainGrad", d, rows, cols); err != nil {
		return err
	}
	return c.do(func() error {
		if err := c.launch("rms_inv_"+d.suffix(), rowGrid(rows), 256, 0, *new(args).p(x).p(scratch).l(rows).i(cols).d(eps)); err != nil {
			return err
		}
		return c.launch("rms_dgain_"+d.suffix(), blocksFor(int64(cols), 256), 256, 0,
			*new(args).p(x).p(dy).p(scratch).p(dgain).l(rows).i(cols))
	})
}
