package kernels

import (
	"fmt"
)

// Row scaling on the CPU: the probs applied to an activation's rows (ScaleRows) and its gradient
// with respect to the probs (RowDot). The CUDA twins are the methods of the same names on *CUDA
// (scale_rows_cuda.go, kernels in scale_rows.cuh).

// ScaleRows writes y[r,c] = x[r,c]·s[r] for x [rows, cols] (each product rounded once, the
// CUDA twin's bits).
func ScaleRows[F float32 | float64](y, x, s []F, cols int) error {
	if cols < 1 || len(x)%cols != 0 || len(y) != len(x) || len(s) != len(x)/cols {
		return fmt.Errorf("gomoe: ScaleRows: %d, %d and %d elements for %d columns", len(y), len(x), len(s), cols)
	}
	if err := checkInPlace("ScaleRows", []span{spanOf("y", y)}, []span{spanOf("x", x), spanOf("s", s)}); err != nil {
		return err
	}
	for i := range x {
		y[i] = x[i] * s[i/cols]
	}
	return nil
}

// RowDot writes out[r] = Σ_c a[r,c]·b[r,c], summed in float64 in column order.
func RowDot[F float32 | float64](out, a, b []F, cols int) error {
	if cols < 1 || len(a)%cols != 0 || len(b) != len(a) || len(out) != len(a)/cols {
		return fmt.Errorf("gomoe: RowDot: %d, %d and %d elements for %d columns", len(out), len(a), len(b), cols)
	}
	if err := checkDisjoint("RowDot", []span{spanOf("out", out)}, []span{spanOf("a", a), spanOf("b", b)}); err != nil {
		return err
	}
	for r := range out {
		var acc float64
		for j := r * cols; j < (r+1)*cols; j++ {
			acc += float64(a[j]) * float64(b[j])
		}
		out[r] = F(acc)
	}
	return nil
}
