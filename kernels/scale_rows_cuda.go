//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Row scaling on the device: the launchers of scale_rows.cuh's kernels (CPU twin: scale_rows.go).

func init() {
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "scale_rows_"+s, "row_dot_"+s)
	}
}

// ScaleRows writes y[r,c] = x[r,c]·s[r] for x [rows, cols] of d and s [rows] of d's probs type
// (float32 for bfloat16).
func (c *CUDA) ScaleRows(d DType, y, x, s cu.DevicePtr, rows int64, cols int) error {
	if !d.valid() || cols < 1 {
		return fmt.Errorf("gomoe: device ScaleRows: dtype %v, %d columns", d, cols)
	}
	if err := colsFit("ScaleRows", cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("scale_rows_"+d.suffix(), gridFor(rows*int64(cols), 256), 256, 0, *new(args).p(x).p(s).p(y).l(rows).i(cols))
	})
}

// RowDot writes out[r] = Σ_c a[r,c]·b[r,c] (out in d's probs type), one warp per row.
func (c *CUDA) RowDot(d DType, out, a, b cu.DevicePtr, rows int64, cols int) error {
	if !d.valid() || cols < 1 {
		return fmt.Errorf("gomoe: device RowDot: dtype %v, %d columns", d, cols)
	}
	if err := colsFit("RowDot", cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("row_dot_"+d.suffix(), rowGrid(rows), 256, 0, *new(args).p(a).p(b).p(out).l(rows).i(cols))
	})
}
