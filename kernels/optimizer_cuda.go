//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// The optimiser updates on the device: the launchers of optimizer.cuh's kernels (CPU twin:
// optimizer.go).

func init() {
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "sgd_"+s, "adam_"+s)
	}
}

// The launchers' sc, when not 0, is device memory holding the scalars that the kernels then
// read instead of their arguments (float64s; SGD: lr, wd, skip; Adam: lr, b1, b2, eps, c1, c2,
// wd, skip): a step captured into a CUDA graph takes each replay's learning rate and bias
// corrections from there, and a skip other than 0 (ClipFinish's flag for a gradient norm that
// is NaN or infinite) leaves the weights, masters and moments unchanged.

// SGDUpdate is the CUDA twin of the CPU SGDUpdate on n elements (float32 or float64).
func (c *CUDA) SGDUpdate(d DType, p, g cu.DevicePtr, n int64, lr, wd float64, sc cu.DevicePtr) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device SGD: dtype %v, want float32 or float64", d)
	}
	return c.do(func() error {
		return c.launch("sgd_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(p).p(g).d(lr).d(wd).l(n).p(sc))
	})
}

// AdamUpdate is the CUDA twin of the CPU AdamUpdate on n elements (float32 or float64).
func (c *CUDA) AdamUpdate(d DType, p, g, m, v cu.DevicePtr, n int64, lr, b1, b2, eps, c1, c2, wd float64, sc cu.DevicePtr) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device Adam: dtype %v, want float32 or float64", d)
	}
	return c.do(func() error {
		return c.launch("adam_"+d.suffix(), gridFor(n, 256), 256, 0,
			*new(args).p(p).p(g).p(m).p(v).d(lr).d(b1).d(b2).d(eps).d(c1).d(c2).d(wd).l(n).p(sc))
	})
}

// SGDUpdateBF16 is the CUDA twin of the CPU SGDUpdateBF16: the float32 master weights w32
// take the float32 SGD step and the bfloat16 weights p become the master rounded.
func (c *CUDA) SGDUpdateBF16(p, g, w32 cu.DevicePtr, n int64, lr, wd float64, sc cu.DevicePtr) error {
	return c.do(func() error {
		return c.launch("sgd_bf16", gridFor(n, 256), 256, 0, *new(args).p(p).p(g).p(w32).d(lr).d(wd).l(n).p(sc))
	})
}

// AdamUpdateBF16 is the CUDA twin of the CPU AdamUpdateBF16 (float32 master weights w32 and
// moments m, v; bfloat16 weights p and gradients g).
func (c *CUDA) AdamUpdateBF16(p, g, w32, m, v cu.DevicePtr, n int64, lr, b1, b2, eps, c1, c2, wd float64, sc cu.DevicePtr) error {
	return c.do(func() error {
		return c.launch("adam_bf16", gridFor(n, 256), 256, 0,
			*new(args).p(p).p(g).p(w32).p(m).p(v).d(lr).d(b1).d(b2).d(eps).d(c1).d(c2).d(wd).l(n).p(sc))
	})
}
