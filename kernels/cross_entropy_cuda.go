//go:build gomoecuda

package kernels

import "gorgonia.org/cu"

// CUDA twins of cross_entropy.go (kernels in cross_entropy.cuh). Like the other launchers they
// enqueue on the default stream and never wait. Every launcher takes float32 or float64 data.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "ce_rows_"+s, "ce_mean_"+s, "ce_bwd_"+s)
	}
}

// CrossEntropy writes into out (one element) the mean over rows of
// logsumexp(logits[r]) − ⟨logits[r], target[r]⟩; scratch holds rows float64s.
func (c *CUDA) CrossEntropy(d DType, out, logits, target, scratch cu.DevicePtr, rows int64, cols int) error {
	if err := nnCheck("CrossEntropy", d, rows, cols); err != nil {
		return err
	}
	return c.do(func() error {
		if err := c.launch("ce_rows_"+d.suffix(), rowGrid(rows), 256, 0, *new(args).p(logits).p(target).p(scratch).l(rows).i(cols)); err != nil {
			return err
		}
		return c.launch("ce_mean_"+d.suffix(), 1, 256, 0, *new(args).p(scratch).p(out).l(rows))
	})
}

// CrossEntropyBackward writes dlogits = g·scale·(softmax(logits[r]) − target[r]), where g is
// the one element at dy, or 1 when dy is 0 (a loss gradient that lives on the host is passed
// in scale instead).
func (c *CUDA) CrossEntropyBackward(d DType, dx, logits, target, dy cu.DevicePtr, scale float64, rows int64, cols int) error {
	if err := nnCheck("CrossEntropyBackward", d, rows, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("ce_bwd_"+d.suffix(), rowGrid(rows), 256, 0,
			*new(args).p(logits).p(target).p(dy).d(scale).p(dx).l(rows).i(cols))
	})
}
