package kernels

import (
	"fmt"
	"math"
)

// The softmax cross-entropy loss and its gradient. Each has a CUDA twin of the same name on
// *CUDA (cross_entropy_cuda.go, cross_entropy.cuh). Matrices are row-major [rows, cols]. Sums
// run in float64 in index order and are rounded once, so these CPU kernels are deterministic;
// the CUDA twins sum in the element type's accumulator (float for float32) in another order
// and agree within a few ulps.

// CrossEntropy returns the mean over the rows of logits [rows, cols] of
// logsumexp(logits[r]) − ⟨logits[r], target[r]⟩: the softmax cross-entropy for one-hot
// (or probability) target rows.
func CrossEntropy[F Float](logits, target []F, cols int) (float64, error) {
	rows, err := nnShape("CrossEntropy", cols, len(logits), len(target))
	if err != nil {
		return 0, err
	}
	if rows == 0 { // the mean of no rows
		return 0, fmt.Errorf("gomoe: CrossEntropy: no rows, want at least one")
	}
	var total float64
	for o := 0; o < len(logits); o += cols {
		total += ceRow(logits[o:o+cols], target[o:o+cols])
	}
	return total / float64(rows), nil
}

// ceRow is one row's loss, log Σ exp(x − m) + Σ_j t_j·(m − x_j) + m·(1 − Σ_j t_j) with m the
// row maximum: lse − ⟨x, t⟩ with m taken out of both terms before they meet, so a large m
// cancels exactly (m + log s − ⟨x, t⟩ lost the whole loss to rounding from |x| ≈ 10¹⁵: a row
// [10³⁰, 10³⁰] with target [1, 0] gave 0, not log 2).
func ceRow[F Float](x, t []F) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var s, d, ts float64
	for j, v := range x {
		s += math.Exp(float64(v) - m)
		if t[j] != 0 { // a class with no target weight adds nothing, even at a logit of −Inf (0·−Inf = NaN)
			d += float64(t[j]) * (m - float64(v))
			ts += float64(t[j])
		}
	}
	return math.Log(s) + d + m*(1-ts)
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
