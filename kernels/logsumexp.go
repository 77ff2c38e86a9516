package kernels

import (
	"fmt"
	"math"
)

// The row log-sum-exp on the CPU, the kernel of op.RowLogSumExp and its gradient (no CUDA twin:
// on the device the op is not offered).

// lseCheck checks x [T,E] against a per-row vector of n = T elements.
func lseCheck(name string, nx, n, E int) error {
	if err := checkWidth(name, "E", E, n); err != nil { // T·E must not wrap
		return err
	}
	if nx != n*E {
		return fmt.Errorf("gomoe: %s: x has %d elements, want T·E = %d·%d", name, nx, n, E)
	}
	return nil
}

// rowMax is the maximum of row in float64, NaN if row holds a NaN (math.Max gives +Inf for
// +Inf and NaN: a row of both would pass for infinite), −Inf for an empty row.
func rowMax[F float32 | float64](row []F) float64 {
	m := math.Inf(-1)
	for _, v := range row {
		if x := float64(v); x > m || x != x {
			m = x
			if x != x {
				break
			}
		}
	}
	return m
}

// rowMaxSum returns the row maximum m (rowMax) and s = Σ exp(x − m) in float64, in order; s is 0
// when m is infinite (unused there), NaN when m is.
func rowMaxSum[F float32 | float64](row []F) (m, s float64) {
	m = rowMax(row)
	if math.IsInf(m, 0) {
		return m, 0
	}
	for _, v := range row {
		s += math.Exp(float64(v) - m)
	}
	return m, s
}

// RowLogSumExp writes out[t] = log Σ_e exp(x[t,e]) for x [T,E] (T = len(out)), in float64 from
// the row maximum m (m + log Σ exp(x − m)), rounded once; a row whose maximum is infinite gets
// that maximum, a row holding a NaN NaN.
func RowLogSumExp[F float32 | float64](out, x []F, E int) error {
	if err := lseCheck("RowLogSumExp", len(x), len(out), E); err != nil {
		return err
	}
	if err := checkInPlace("RowLogSumExp", []span{spanOf("out", out)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	for t := range out {
		out[t] = F(rowLSE(x[t*E : (t+1)*E]))
	}
	return nil
}

// RowLogSumExpBackward adds softmax(x[t])_e·g[t] into dx [T,E], from x [T,E], the forward output
// lse [T] and its gradient g [T]. The softmax is exp(x − m) / Σ exp(x − m) in float64 from the
// row maximum m, rounded once, as the forward sums it; not exp(x − lse): lse rounds away
// log Σ exp(x − m) once it is large against it (float32 from about 10⁶, float64 from about
// 10¹⁵), which turned a row of two equal logits of 10³⁰ into the gradient [g g]. A row whose
// maximum is infinite or NaN takes exp(x − lse)·g (NaN or 0 and NaN, as the arithmetic gives).
func RowLogSumExpBackward[F float32 | float64](dx, x, lse, g []F, E int) error {
	const name = "RowLogSumExpGrad"
	if err := lseCheck(name, len(x), len(lse), E); err != nil {
		return err
	}
	if len(dx) != len(x) || len(g) != len(lse) {
		return fmt.Errorf("gomoe: %s: dx has %d elements and g %d, want %d and %d", name, len(dx), len(g), len(x), len(lse))
	}
	if err := checkDisjoint(name, []span{spanOf("dx", dx)}, []span{spanOf("x", x), spanOf("lse", lse), spanOf("g", g)}); err != nil {
		return err
	}
	for t := range lse {
		row := x[t*E : (t+1)*E]
		m, s := rowMaxSum(row)
		if math.IsInf(m, 0) || math.IsNaN(m) {
			for e, v := range row {
				dx[t*E+e] += F(math.Exp(float64(v)-float64(lse[t]))) * g[t]
			}
			continue
		}
		for e, v := range row {
			dx[t*E+e] += F(math.Exp(float64(v)-m)/s) * g[t]
		}
	}
	return nil
}
