//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// The row ops on the device: the launchers of rowop.cuh's kernels (CPU twin: rowop.go).

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "row_fwd_"+s, "row_bwd_"+s)
	}
}

func rowDType(k RowOp, d DType, cols int) error {
	if k != RowSoftmax && k != RowNormalize {
		return fmt.Errorf("gomoe: device row op: unknown kind %d", int(k))
	}
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %v: dtype %v, want float32 or float64", k, d)
	}
	if cols < 1 {
		return fmt.Errorf("gomoe: device %v: %d columns", k, cols)
	}
	return colsFit(fmt.Sprint(k), cols)
}

// RowForward writes y = kind(x) for every row of x [rows, cols] (one warp per row).
func (c *CUDA) RowForward(d DType, kind RowOp, y, x cu.DevicePtr, rows int64, cols int) error {
	if err := rowDType(kind, d, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("row_fwd_"+d.suffix(), rowGrid(rows), 256, 0, *new(args).i(int(kind)).p(x).p(y).l(rows).i(cols))
	})
}

// RowBackward writes dx from x (RowNormalize only), y and dy, row by row.
func (c *CUDA) RowBackward(d DType, kind RowOp, dx, x, y, dy cu.DevicePtr, rows int64, cols int) error {
	if err := rowDType(kind, d, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("row_bwd_"+d.suffix(), rowGrid(rows), 256, 0,
			*new(args).i(int(kind)).p(x).p(y).p(dy).p(dx).l(rows).i(cols))
	})
}
