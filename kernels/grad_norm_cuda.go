//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Gradient-norm clipping on the device: the launchers of grad_norm.cuh's kernels.

func init() {
	kernelNames = append(kernelNames, "sum_reduce_f32", "sum_reduce_f64", "clip_finish",
		"scale_by_f32", "scale_by_f64", "scale_by_bf16", "sq_rows_f32", "sq_rows_bf16")
}

// StatusBadNorm is the status bit ClipFinish sets for a NaN or infinite gradient norm.
const StatusBadNorm = 64

// SquareRows writes out[r] (float64) = Σ_j g[r·cols + j]² for each of rows rows of a float32 or
// bfloat16 gradient: the squares and their sums in double (grad_norm.cuh's sq_rows), for
// SumReduce. One warp per row.
func (c *CUDA) SquareRows(d DType, out, g cu.DevicePtr, rows int64, cols int) error {
	if d != F32 && d != BF16 {
		return fmt.Errorf("gomoe: device SquareRows: dtype %v, want float32 or bfloat16 (float64 takes RowDot)", d)
	}
	if rows < 0 || cols < 1 {
		return fmt.Errorf("gomoe: device SquareRows: %d rows of %d, want rows >= 0 and cols >= 1", rows, cols)
	}
	if err := colsFit("SquareRows", cols); err != nil {
		return err
	}
	if rows == 0 {
		return nil
	}
	return c.do(func() error {
		return c.launch("sq_rows_"+d.suffix(), rowGrid(rows), 256, 0, *new(args).p(g).p(out).l(rows).i(cols))
	})
}

// SumReduce writes out[0] (a float64) = the sum of n row sums (float32 or float64, as RowDot
// writes them) in double, in grad_norm.cuh's fixed order: one block.
func (c *CUDA) SumReduce(d DType, out, rows cu.DevicePtr, n int64) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device SumReduce: row sums of dtype %v, want float32 or float64", d)
	}
	return c.do(func() error {
		return c.launch("sum_reduce_"+d.suffix(), 1, 256, 0, *new(args).p(rows).l(n).p(out))
	})
}

// ClipFinish adds the n float64 sums (one per gradient, in order) and, for the max norm st[3],
// writes st[0] = skip (1 for a NaN or infinite norm, with StatusBadNorm; else 0), st[1] = the
// norm and st[2] = the scale maxNorm/(norm + 1e-6) (1 when skipped, or when st[3] <= 0: no
// clipping). One thread.
func (c *CUDA) ClipFinish(st, sums cu.DevicePtr, n int) error {
	return c.do(func() error {
		return c.launch("clip_finish", 1, 32, 0, *new(args).p(sums).i(n).p(st).p(c.status))
	})
}

// ScaleBy multiplies the n elements of g by st[2] when st[2] < 1 (in the accumulator type,
// rounded once: Binary's OpMul with that scalar).
func (c *CUDA) ScaleBy(d DType, g, st cu.DevicePtr, n int64) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device ScaleBy: dtype %v", d)
	}
	return c.do(func() error {
		return c.launch("scale_by_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(g).p(st).l(n))
	})
}
