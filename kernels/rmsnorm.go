package kernels

import (
	"fmt"
	"math"
)

// RMSNorm and its gradients wrt the input and the gain. Each has a CUDA twin of the same name
// on *CUDA (rmsnorm_cuda.go, rmsnorm.cuh); the float32 rows run in AVX2 on amd64
// (rmsnorm_amd64.go). Matrices are row-major [rows, cols]. Sums run in float64 in a fixed
// order and are rounded once, so these CPU kernels are deterministic; the CUDA twins sum in
// the element type's accumulator (float for float32) in another order and agree within a few
// ulps.

// rmsInv returns 1/sqrt(mean(row²) + eps), the sum of squares in float64 in dot64's fixed
// lane order (each square exact for float32 data).
func rmsInv[F Float](row []F, eps float64) float64 {
	return 1 / math.Sqrt(dot64(row, row)/float64(len(row))+eps)
}

// rmsRow sets y[j] = (x[j]·r)·gain[j] in float64, rounded once to F; float32 runs the whole
// groups of 8 in AVX2 on amd64 (rmsScale32), with the same bits.
func rmsRow[F Float](y, x, gain []F, r float64) {
	j := 0
	if y32, ok := any(y).([]float32); ok {
		j = rmsScale32(y32, any(x).([]float32), any(gain).([]float32), r)
	}
	for ; j < len(y); j++ {
		y[j] = F(float64(float64(x[j])*r) * float64(gain[j]))
	}
}

// rmsBackRow sets dx[j] = (r·gain[j])·dy[j] − x[j]·c in float64, rounded once to F; float32
// runs the whole groups of 8 in AVX2 on amd64 (rmsBack32), with the same bits.
func rmsBackRow[F Float](dx, x, gain, dy []F, r, c float64) {
	j := 0
	if dx32, ok := any(dx).([]float32); ok {
		j = rmsBack32(dx32, any(x).([]float32), any(gain).([]float32), any(dy).([]float32), r, c)
	}
	for ; j < len(dx); j++ {
		a := float64(float64(r*float64(gain[j])) * float64(dy[j]))
		dx[j] = F(a - float64(float64(x[j])*c))
	}
}

// RMSNorm writes y = x · r · gain row by row for x [rows, len(gain)], where
// r = 1/sqrt(mean(x²) + eps) of the row. The sum of squares runs in float64 in a fixed lane
// order (dot64) and each y is computed in float64 and rounded once; rows are split over
// GOMAXPROCS goroutines, one goroutine per row, so the bits depend on neither the thread
// count nor the path (float32 rows run in AVX2 on amd64 with the same bits as the Go loops).
func RMSNorm[F Float](y, x, gain []F, eps float64) error {
	if _, err := nnShape("RMSNorm", len(gain), len(x), len(y)); err != nil {
		return err
	}
	if err := checkInPlace("RMSNorm", []span{spanOf("y", y)}, []span{spanOf("x", x), spanOf("gain", gain)}); err != nil {
		return err
	}
	if !(eps >= 0) {
		return fmt.Errorf("gomoe: RMSNorm: eps %g, want >= 0", eps)
	}
	cols := len(gain)
	parallelRange(len(x)/cols, max(1, actBlock/cols), func(lo, hi int) {
		for o := lo * cols; o < hi*cols; o += cols {
			xr := x[o : o+cols]
			rmsRow(y[o:o+cols], xr, gain, rmsInv(xr, eps))
		}
	})
	return nil
}

// RMSNormBackward writes the gradient wrt x of RMSNorm from dy, row by row:
//
//	dx_j = r·gain_j·dy_j − x_j · r³ · (Σ_k gain_k·dy_k·x_k) / cols.
//
// The sums run in float64 in dot64's fixed lane order and each dx is computed in float64 and
// rounded once, on one goroutine per row (float32 rows in AVX2 on amd64, same bits).
func RMSNormBackward[F Float](dx, x, gain, dy []F, eps float64) error {
	if _, err := nnShape("RMSNormBackward", len(gain), len(x), len(dx), len(dy)); err != nil {
		return err
	}
	if err := checkInPlace("RMSNormBackward", []span{spanOf("dx", dx)}, []span{spanOf("x", x), spanOf("gain", gain), spanOf("dy", dy)}); err != nil {
		return err
	}
	if !(eps >= 0) {
		return fmt.Errorf("gomoe: RMSNormBackward: eps %g, want >= 0", eps)
	}
	cols := len(gain)
	parallelRange(len(x)/cols, max(1, actBlock/cols), func(lo, hi int) {
		for o := lo * cols; o < hi*cols; o += cols {
			xr, dyr := x[o:o+cols], dy[o:o+cols]
			r := rmsInv(xr, eps)
			dot := dot3_64(gain, dyr, xr)
			c := r * r * r * dot / float64(cols)
			rmsBackRow(dx[o:o+cols], xr, gain, dyr, r, c)
		}
	})
	return nil
}

// RMSNormGainGrad writes the gradient wrt the gain of RMSNorm: dgain_j = Σ_rows dy_j·x_j·r,
// summed in float64 in row order for every column.
func RMSNormGainGrad[F Float](dgain, x, dy []F, eps float64) error {
	rows, err := nnShape("RMSNormGainGrad", len(dgain), len(x), len(dy))
	if err != nil {
		return err
	}
	if err := checkDisjoint("RMSNormGainGrad", []span{spanOf("dgain", dgain)}, []span{spanOf("x", x), spanOf("dy", dy)}); err != nil {
		return err
	}
	if !(eps >= 0) {
		return fmt.Errorf("gomoe: RMSNormGainGrad: eps %g, want >= 0", eps)
	}
	cols := len(dgain)
	acc := make([]float64, cols)
	for r := 0; r < rows; r++ {
		// Row by row, each column's sum in row order (the same order as a column walk, in
		// memory order).
		xr, dyr := x[r*cols:(r+1)*cols], dy[r*cols:(r+1)*cols]
		ri := rmsInv(xr, eps)
		for j, a := range acc {
			acc[j] = a + float64(float64(float64(dyr[j])*float64(xr[j]))*ri)
		}
	}
	for j, s := range acc {
		dgain[j] = F(s)
	}
	return nil
}
