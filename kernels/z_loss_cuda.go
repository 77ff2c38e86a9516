//go:build gomoecuda

package kernels

import (
	"fmt"
	"math"

	"gorgonia.org/cu"
)

// CUDA twins of z_loss.go (kernels in z_loss.cuh). Like the other launchers they enqueue on the
// default stream and never wait; the caller provides the scratch memory (work) of the size
// ZLossWorkBytes gives, which may be reused as soon as later work on the same stream is enqueued.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "zloss_rows_"+s, "zloss_bwd_"+s, "loss_sum_"+s)
	}
}

// ZLossWorkBytes is the scratch size of ZLossForward: one float64 per row.
func ZLossWorkBytes(T int) int64 { return 8 * int64(max(T, 0)) }

func zShape(name string, d DType, T, E int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %s: dtype %v, want float32 or float64", name, d)
	}
	if T < 1 || E < 1 || E > math.MaxInt32 || int64(T) > math.MaxInt64/int64(E)/8 {
		return fmt.Errorf("gomoe: device %s: T=%d E=%d, want both >= 1", name, T, E)
	}
	return nil
}

// ZLossForward writes into out (one element of dtype d) the z-loss of logits x [T,E] as the
// CPU ZLossForward computes it (within a few float64 ulps before the final rounding: CUDA's
// exp and log).
func (c *CUDA) ZLossForward(d DType, out, x, work cu.DevicePtr, T, E int, scale float64) error {
	if err := zShape("ZLossForward", d, T, E); err != nil {
		return err
	}
	rows := int64(T)
	return c.do(func() error {
		if err := c.launch("zloss_rows_"+d.suffix(), gridFor(rows*32, 256), 256, 0,
			*new(args).p(x).p(work).l(rows).i(E)); err != nil {
			return err
		}
		return c.launch("loss_sum_"+d.suffix(), 1, LossLanes, 0, *new(args).p(work).p(out).l(rows).d(scale))
	})
}

// ZLossBackward writes dx [T,E], the CPU ZLossBackward (within a few float64 ulps before the
// final rounding). dy is a one-element device tensor of dtype d, or 0 to use dyv.
func (c *CUDA) ZLossBackward(d DType, dx, x, dy cu.DevicePtr, T, E int, scale, dyv float64) error {
	if err := zShape("ZLossBackward", d, T, E); err != nil {
		return err
	}
	rows := int64(T)
	return c.do(func() error {
		return c.launch("zloss_bwd_"+d.suffix(), gridFor(rows*32, 256), 256, 0,
			*new(args).p(x).p(dx).p(dy).d(dyv).l(rows).i(E).d(scale))
	})
}
