package kernels

import (
	"fmt"
	"math"

	"github.com/gomoe/gomoe/bfloat16"
)

// The three-term bfloat16 split of float32 values, the CPU twin of split_bf16.cuh (launcher:
// split_bf16_cuda.go). It lets float32 matrix products run on bfloat16 tensor cores: every
// finite float32 v is the exact sum of three bfloat16 values, v = p0 + p1 + p2, and a product
// of two bfloat16 values is exact in float32, so a GEMM over the pieces, accumulated in
// float32, gives the float32 product up to the accumulation's rounding and the cross terms
// left out (CUDA.SplitGemm). Both twins compute the pieces with the same float32 operations, so
// they agree bit for bit.

// SplitBF16Pieces returns v's three bfloat16 pieces, largest first: p0 is v rounded to nearest
// even (truncated instead where rounding would overflow to infinity), p1 the remainder
// v − p0 rounded the same way, p2 what is left, v − p0 − p1 (exact: at most 8 significant bits
// remain). Each remainder is exact in float32, so p0 + p1 + p2 = v for every finite v whose
// pieces are not subnormal (|v| ≥ 2⁻¹⁰⁹ or so; below that the smallest piece may round).
// |p1| ≤ 2⁻⁸·|v| and |p2| ≤ 2⁻¹⁶·|v|, roughly. For ±Inf and NaN, p0 is v's bfloat16 and p1 =
// p2 = 0.
func SplitBF16Pieces(v float32) (p0, p1, p2 bfloat16.BFloat16) {
	p0 = bfloat16.FromFloat32(v)
	finite := !math.IsInf(float64(v), 0) && !math.IsNaN(float64(v))
	if !finite {
		return p0, 0, 0
	}
	if math.IsInf(float64(p0.Float32()), 0) { // v is above bfloat16's largest value: truncate
		p0 = bfloat16.BFloat16(math.Float32bits(v) >> 16)
	}
	r := v - p0.Float32()
	p1 = bfloat16.FromFloat32(r)
	p2 = bfloat16.FromFloat32(r - p1.Float32())
	return p0, p1, p2
}

// MaxSplitTerms is the most pieces a pattern of SplitBF16 may name.
const MaxSplitTerms = 6

// SplitBF16 writes the pieces of in [rows, cols] (float32, row-major) named by pattern: for
// row r, column c and j < len(pattern), out[r·rowStride + j·pieceStride + c] is piece
// pattern[j] (0, 1 or 2: SplitBF16Pieces) of in[r·cols + c]. With rowStride =
// len(pattern)·cols and pieceStride = cols, each row holds its pieces side by side (the
// operand of a GEMM stacked along its columns); with rows = 1, the pieces are whole matrices
// pieceStride apart. Other elements of out are not written.
func SplitBF16(out []bfloat16.BFloat16, in []float32, rows, cols, rowStride, pieceStride int, pattern []int) error {
	if err := checkSplit(len(out), len(in), rows, cols, rowStride, pieceStride, pattern); err != nil {
		return err
	}
	if err := checkDisjoint("SplitBF16", []span{spanOf("out", out)}, []span{spanOf("in", in)}); err != nil {
		return err
	}
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			var p [3]bfloat16.BFloat16
			p[0], p[1], p[2] = SplitBF16Pieces(in[r*cols+c])
			for j, k := range pattern {
				out[r*rowStride+j*pieceStride+c] = p[k]
			}
		}
	}
	return nil
}

// checkSplit checks SplitBF16's arguments for buffers of nOut and nIn elements (nOut < 0: not
// known, as for a device pointer).
func checkSplit(nOut, nIn int, rows, cols, rowStride, pieceStride int, pattern []int) error {
	if rows < 1 || cols < 1 {
		return fmt.Errorf("gomoe: SplitBF16: shape (%d, %d), want at least one row and column", rows, cols)
	}
	if len(pattern) < 1 || len(pattern) > MaxSplitTerms {
		return fmt.Errorf("gomoe: SplitBF16: %d pieces, want 1 to %d", len(pattern), MaxSplitTerms)
	}
	for _, k := range pattern {
		if k < 0 || k > 2 {
			return fmt.Errorf("gomoe: SplitBF16: piece %d, want 0, 1 or 2", k)
		}
	}
	J := len(pattern)
	// Every size and stride below 2⁴⁰ and the last element written below 2⁶²: no product
	// below can overflow.
	const lim = 1 << 40
	if rows > lim || cols > lim || rowStride > lim || pieceStride > lim ||
		float64(rows-1)*float64(rowStride)+float64(J-1)*float64(pieceStride)+float64(cols) > 1<<62 {
		return fmt.Errorf("gomoe: SplitBF16: shape (%d, %d) with strides (row %d, piece %d) is too large", rows, cols, rowStride, pieceStride)
	}
	if pieceStride < cols || (rows > 1 && rowStride < (J-1)*pieceStride+cols) {
		return fmt.Errorf("gomoe: SplitBF16: strides (row %d, piece %d) overlap %d pieces of %d columns", rowStride, pieceStride, J, cols)
	}
	if int64(rows)*int64(cols) > int64(nIn) && nIn >= 0 {
		return fmt.Errorf("gomoe: SplitBF16: %d inputs for shape (%d, %d)", nIn, rows, cols)
	}
	need := int64(rows-1)*int64(rowStride) + int64(J-1)*int64(pieceStride) + int64(cols)
	if nOut >= 0 && need > int64(nOut) {
		return fmt.Errorf("gomoe: SplitBF16: %d outputs, want at least %d", nOut, need)
	}
	return nil
}
