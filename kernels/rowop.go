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
//
// The float32 softmax on a CPU with AVX2 and FMA runs the vector exp (expSub32): each row's
// numerators exp(x − max) in float32, their sum in float64 in a fixed lane order
// (sumLanes64), y = numerator / sum in float64 rounded once; within softmaxULP float32 ulps of
// the float64 formula rounded to float32 (TestRowSoftmax32). A row whose maximum is ±Inf or
// NaN, and every other case, takes the float64 formula, so the special values (a NaN or +Inf
// in a row, a row of −Inf: NaN throughout) are the same on both paths. Rows are split over
// GOMAXPROCS goroutines, each row computed by one, so the bits do not depend on the thread
// count.
func RowForward[F float32 | float64](kind RowOp, y, x []F, cols int) error {
	if err := rowArgs(kind, cols, len(y), len(x)); err != nil {
		return err
	}
	if err := checkInPlace("RowForward", []span{spanOf("y", y)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	y32, _ := any(y).([]float32)
	x32, _ := any(x).([]float32)
	vec := kind == RowSoftmax && hasExpAsm && y32 != nil
	parallelRange(len(x)/cols, max(1, actBlock/cols), func(lo, hi int) {
		for r := lo * cols; r < hi*cols; r += cols {
			if vec && softmaxRow32(y32[r:r+cols], x32[r:r+cols]) {
				continue
			}
			rowForward64(kind, y[r:r+cols], x[r:r+cols])
		}
	})
	return nil
}

// rowForward64 is one row of RowForward in float64, rounded once.
func rowForward64[F float32 | float64](kind RowOp, yr, xr []F) {
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
		return
	}
	var s float64
	for _, v := range xr {
		s += float64(v)
	}
	for j, v := range xr {
		yr[j] = F(float64(v) / s)
	}
}

// softmaxRow32 writes the softmax of one float32 row with the vector exp and reports true, or
// reports false (writing nothing) when the row's maximum is ±Inf or NaN.
func softmaxRow32(y, x []float32) bool {
	m := x[0]
	for _, v := range x[1:] {
		if v > m || v != v { // a NaN sticks
			m = v
		}
	}
	if m != m || m-m != 0 { // NaN or ±Inf
		return false
	}
	expSub32(y, x, m)
	s := sumLanes64(y)
	for j, e := range y {
		y[j] = float32(float64(e) / s)
	}
	return true
}

// sumLanes64 is Σ a[h] in float64 in dot64's order: lane j of 8 sums the elements with
// h ≡ j (mod 8) in h order, and the lanes are added in the tree ((0+4)+(2+6))+((1+5)+(3+7)).
func sumLanes64(a []float32) float64 {
	var l [8]float64
	i := 0
	for ; i+8 <= len(a); i += 8 {
		aa := a[i : i+8 : i+8]
		l[0] += float64(aa[0])
		l[1] += float64(aa[1])
		l[2] += float64(aa[2])
		l[3] += float64(aa[3])
		l[4] += float64(aa[4])
		l[5] += float64(aa[5])
		l[6] += float64(aa[6])
		l[7] += float64(aa[7])
	}
	for j := 0; i < len(a); i, j = i+1, j+1 {
		l[j] += float64(a[i])
	}
	return ((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))
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
