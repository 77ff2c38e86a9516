package kernels

import (
	"fmt"
	"math"
)

// Kernels for the building blocks of the examples' models around the MoE layer: a bias add
// and its column-sum gradient, ReLU, RMSNorm and the softmax cross-entropy loss. Each has a
// CUDA twin of the same name on *CUDA (nn_cuda.go, nn.cuh). Matrices are row-major
// [rows, cols]. Sums run in float64 in index order and are rounded once, so these CPU
// kernels are deterministic; the CUDA twins sum in the element type's accumulator (float for
// float32) in another order and agree within a few ulps.

// nnShape checks that x holds whole rows of cols elements and that every other length in n
// equals len(x).
func nnShape(what string, cols, x int, n ...int) (rows int, err error) {
	if cols < 1 {
		return 0, fmt.Errorf("gomoe: %s: %d columns", what, cols)
	}
	if x%cols != 0 {
		return 0, fmt.Errorf("gomoe: %s: %d elements are not rows of %d", what, x, cols)
	}
	if err := sameLen(what, x, n...); err != nil {
		return 0, err
	}
	return x / cols, nil
}

// BiasAdd writes y[r,c] = x[r,c] + b[c] for x and y [rows, len(b)].
func BiasAdd[F Float](y, x, b []F) error {
	if _, err := nnShape("BiasAdd", len(b), len(x), len(y)); err != nil {
		return err
	}
	if err := checkInPlace("BiasAdd", []span{spanOf("y", y)}, []span{spanOf("x", x), spanOf("b", b)}); err != nil {
		return err
	}
	cols := len(b)
	for i := range x {
		y[i] = x[i] + b[i%cols]
	}
	return nil
}

// ColSum writes out[c] = Σ_r x[r,c] for x [rows, len(out)] (the bias gradient).
func ColSum[F Float](out, x []F) error {
	rows, err := nnShape("ColSum", len(out), len(x))
	if err != nil {
		return err
	}
	if err := checkDisjoint("ColSum", []span{spanOf("out", out)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	cols := len(out)
	for c := range out {
		var s float64
		for r := 0; r < rows; r++ {
			s += float64(x[r*cols+c])
		}
		out[c] = F(s)
	}
	return nil
}

// ReLU writes y = max(x, 0) element-wise; a NaN stays NaN.
func ReLU[F Float](y, x []F) error {
	if err := sameLen("ReLU", len(y), len(x)); err != nil {
		return err
	}
	if err := checkInPlace("ReLU", []span{spanOf("y", y)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	for i, v := range x {
		if v > 0 || v != v {
			y[i] = v
		} else {
			y[i] = 0
		}
	}
	return nil
}

// ReLUBackward writes dx = dy where x > 0 and 0 elsewhere.
func ReLUBackward[F Float](dx, x, dy []F) error {
	if err := sameLen("ReLUBackward", len(dx), len(x), len(dy)); err != nil {
		return err
	}
	if err := checkInPlace("ReLUBackward", []span{spanOf("dx", dx)}, []span{spanOf("x", x), spanOf("dy", dy)}); err != nil {
		return err
	}
	for i, v := range x {
		if v > 0 {
			dx[i] = dy[i]
		} else {
			dx[i] = 0
		}
	}
	return nil
}

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

// CrossEntropy returns the mean over the rows of logits [rows, cols] of
// logsumexp(logits[r]) − ⟨logits[r], target[r]⟩: the softmax cross-entropy for one-hot
// (or probability) target rows.
func CrossEntropy[F Float](logits, target []F, cols int) (float64, error) {
	rows, err := nnShape("CrossEntropy", cols, len(logits), len(target))
	if err != nil {
		return 0, err
	}
	var total float64
	for o := 0; o < len(logits); o += cols {
		total += ceRow(logits[o:o+cols], target[o:o+cols])
	}
	return total / float64(rows), nil
}

func ceRow[F Float](x, t []F) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s, dot float64
	for j, v := range x {
		s += math.Exp(float64(v) - m)
		dot += float64(t[j]) * float64(v)
	}
	return m + math.Log(s) - dot
}

// CrossEntropyBackward writes dlogits = scale·(softmax(logits[r]) − target[r]) row by row;
// scale is the loss gradient divided by the number of rows.
func CrossEntropyBackward[F Float](dx, logits, target []F, cols int, scale float64) error {
	if _, err := nnShape("CrossEntropyBackward", cols, len(logits), len(target), len(dx)); err != nil {
		return err
	}
	if err := checkInPlace("CrossEntropyBackward", []span{spanOf("dx", dx)}, []span{spanOf("logits", logits), spanOf("target", target)}); err != nil {
		return err
	}
	for o := 0; o < len(logits); o += cols {
		x := logits[o : o+cols]
		m := math.Inf(-1)
		for _, v := range x {
			m = math.Max(m, float64(v))
		}
		var s float64
		for _, v := range x {
			s += math.Exp(float64(v) - m)
		}
		for j, v := range x {
			dx[o+j] = F(scale * (math.Exp(float64(v)-m)/s - float64(target[o+j])))
		}
	}
	return nil
}

// Embedding writes out[i,:] = table[ids[i],:] for table [V, cols] and ids [N]; an id outside
// [0, V) is an error (nothing is written).
func Embedding[F Float](out, table []F, ids []int32, cols int) error {
	V, err := nnShape("Embedding", cols, len(table))
	if err != nil {
		return err
	}
	if err := checkDisjoint("Embedding", []span{spanOf("out", out)}, []span{spanOf("table", table), spanOf("ids", ids)}); err != nil {
		return err
	}
	if err := sameLen("Embedding", len(out), len(ids)*cols); err != nil {
		return err
	}
	for i, v := range ids {
		if v < 0 || int(v) >= V {
			return fmt.Errorf("gomoe: Embedding: id %d at %d is outside [0, %d)", v, i, V)
		}
	}
	for i, v := range ids {
		copy(out[i*cols:(i+1)*cols], table[int(v)*cols:(int(v)+1)*cols])
	}
	return nil
}

// EmbeddingBackward writes dtable[v,:] = Σ_{i: ids[i] = v} dy[i,:] for dtable [V, cols] and
// dy [len(ids), cols] (float64 sums in index order; rows no id names are 0).
func EmbeddingBackward[F Float](dtable, dy []F, ids []int32, cols int) error {
	V, err := nnShape("EmbeddingBackward", cols, len(dtable))
	if err != nil {
		return err
	}
	if err := checkDisjoint("EmbeddingBackward", []span{spanOf("dtable", dtable)}, []span{spanOf("dy", dy), spanOf("ids", ids)}); err != nil {
		return err
	}
	if err := sameLen("EmbeddingBackward", len(dy), len(ids)*cols); err != nil {
		return err
	}
	for i, v := range ids {
		if v < 0 || int(v) >= V {
			return fmt.Errorf("gomoe: EmbeddingBackward: id %d at %d is outside [0, %d)", v, i, V)
		}
	}
	acc := make([]float64, len(dtable))
	for i, v := range ids {
		a, d := acc[int(v)*cols:(int(v)+1)*cols], dy[i*cols:(i+1)*cols]
		for j, x := range d {
			a[j] += float64(x)
		}
	}
	for i, s := range acc {
		dtable[i] = F(s)
	}
	return nil
}
