package kernels

import (
	"fmt"
	"math"
)

// The row ops on the CPU (row softmax, row normalisation), forward and backward. The CUDA twins
// are the methods of the same names on *CUDA (rowop_cuda.go, kernels in rowop.cuh); they use
// transcendental functions, so the two agree within a few ulps.

// RowOp selects a row-wise op of RowForward and RowBackward on a [rows, cols] matrix.
type RowOp int

const (
	// RowSoftmax is y = exp(x − max(x)) / Σ exp(x − max(x)) along each row.
	RowSoftmax RowOp = 1
	// RowNormalize is y = x / Σ x along each row.
	RowNormalize RowOp = 2
)

// String names the row op.
func (k RowOp) String() string {
	switch k {
	case RowSoftmax:
		return "RowSoftmax"
	case RowNormalize:
		return "RowNormalize"
	}
	return fmt.Sprintf("RowOp(%d)", int(k))
}

func rowArgs(k RowOp, cols int, n ...int) error {
	if k != RowSoftmax && k != RowNormalize {
		return fmt.Errorf("gomoe: row op: unknown kind %d", int(k))
	}
	if cols < 1 {
		return fmt.Errorf("gomoe: %v: %d columns", k, cols)
	}
	if err := sameLen(k.String(), n[0], n[1:]...); err != nil {
		return err
	}
	if n[0]%cols != 0 {
		return fmt.Errorf("gomoe: %v: %d elements are not rows of %d", k, n[0], cols)
	}
	return nil
}

// RowForward writes y = kind(x) for every row of x [rows, cols] (sums in float64, rounded once).
func RowForward[F float32 | float64](kind RowOp, y, x []F, cols int) error {
	if err := rowArgs(kind, cols, len(y), len(x)); err != nil {
		return err
	}
	if err := checkInPlace("RowForward", []span{spanOf("y", y)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	for r := 0; r < len(x); r += cols {
		xr, yr := x[r:r+cols], y[r:r+cols]
		if kind == RowSoftmax {
			m := math.Inf(-1)
			for _, v := range xr {
				m = math.Max(m, float64(v))
			}
			var s float64
			for _, v := range xr {
				s += math.Exp(float64(v) - m)
			}
			for j, v := range xr {
				yr[j] = F(math.Exp(float64(v)-m) / s)
			}
			continue
		}
		var s float64
		for _, v := range xr {
			s += float64(v)
		}
		for j, v := range xr {
			yr[j] = F(float64(v) / s)
		}
	}
	return nil
}

// RowBackward writes dx from dy, the forward input x and output y, row by row:
//
//	RowSoftmax   dx = y·(dy − Σ dy·y)
//	RowNormalize dx = (dy − Σ dy·y) / Σ x
func RowBackward[F float32 | float64](kind RowOp, dx, x, y, dy []F, cols int) error {
	if err := rowArgs(kind, cols, len(dx), len(y), len(dy)); err != nil {
		return err
	}
	if err := checkInPlace("RowBackward", []span{spanOf("dx", dx)}, []span{spanOf("x", x), spanOf("y", y), spanOf("dy", dy)}); err != nil {
		return err
	}
	if kind == RowNormalize && len(x) != len(dx) {
		return fmt.Errorf("gomoe: %v: x has %d elements, want %d", kind, len(x), len(dx))
	}
	for r := 0; r < len(dx); r += cols {
		var d, s float64
		for j := r; j < r+cols; j++ {
			d += float64(dy[j]) * float64(y[j])
			if kind == RowNormalize {
				s += float64(x[j])
			}
		}
		for j := r; j < r+cols; j++ {
			g := float64(dy[j]) - d
			if kind == RowSoftmax {
				dx[j] = F(float64(y[j]) * g)
			} else {
				dx[j] = F(g / s)
			}
		}
	}
	return nil
}
