//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// CUDA twins of nn.go (kernels in nn.cuh). Like the other launchers they enqueue on the
// default stream and never wait. Every launcher takes float32 or float64 data.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "bias_add_"+s, "col_sum_"+s, "relu_fwd_"+s, "relu_bwd_"+s,
			"rms_fwd_"+s, "rms_bwd_"+s, "rms_inv_"+s, "rms_dgain_"+s, "ce_rows_"+s, "ce_mean_"+s, "ce_bwd_"+s, "embed_fwd_"+s, "embed_bwd_"+s)
	}
}

// StatusBadIndex is the status bit Embedding sets for an id outside [0, V) (its row of the
// output is then 0).
const StatusBadIndex = 16

// nnCheck checks the dtype (float32 or float64) and the matrix shape of an nn launcher.
func nnCheck(what string, d DType, rows int64, cols int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %s: dtype %v, want float32 or float64", what, d)
	}
	if rows < 1 || cols < 1 {
		return fmt.Errorf("gomoe: device %s: shape (%d, %d)", what, rows, cols)
	}
	return nil
}

// rowGrid is the grid of a one-warp-per-row kernel with 256-thread blocks.
func rowGrid(rows int64) int { return int((rows*32 + 255) / 256) }

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
		return c.launch("col_sum_"+d.suffix(), gridFor(int64(cols), 256), 256, 0, *new(args).p(x).p(out).l(rows).i(cols))
	})
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
		return c.launch("rms_dgain_"+d.suffix(), gridFor(int64(cols), 256), 256, 0,
			*new(args).p(x).p(dy).p(scratch).p(dgain).l(rows).i(cols))
	})
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

// Embedding writes out[i,:] = table[ids[i],:] for table [V, cols] and ids [n] int32. An id
// outside [0, V) gives a zero row and sets StatusBadIndex.
func (c *CUDA) Embedding(d DType, out, table, ids cu.DevicePtr, n int64, V, cols int) error {
	if err := nnCheck("Embedding", d, n, cols); err != nil {
		return err
	}
	if V < 1 {
		return fmt.Errorf("gomoe: device Embedding: %d table rows", V)
	}
	total := n * int64(cols)
	return c.do(func() error {
		return c.launch("embed_fwd_"+d.suffix(), gridFor(total, 256), 256, 0,
			*new(args).p(table).p(ids).p(out).l(total).i(cols).i(V).p(c.status))
	})
}

// EmbeddingBackward writes dtable [V, cols] = Σ over the n rows of dy whose id is v (double
// sums in row order, bitwise the CPU's); ids outside [0, V) are skipped.
func (c *CUDA) EmbeddingBackward(d DType, dtable, dy, ids cu.DevicePtr, n int64, V, cols int) error {
	if err := nnCheck("EmbeddingBackward", d, n, cols); err != nil {
		return err
	}
	if V < 1 {
		return fmt.Errorf("gomoe: device EmbeddingBackward: %d table rows", V)
	}
	return c.do(func() error {
		return c.launch("embed_bwd_"+d.suffix(), gridFor(int64(V)*int64(cols), 256), 256, 0,
			*new(args).p(dy).p(ids).p(dtable).l(n).i(cols).i(V))
	})
}
