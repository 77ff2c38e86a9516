package kernels

import (
	"fmt"
	"math"
)

// The router z-loss on the CPU, forward and backward. Each has a CUDA twin of the same name on
// *CUDA (z_loss_cuda.go, kernels in z_loss.cuh) that sums in the same fixed order: each row's
// log-sum-exp in float64 (the row maximum first), then the squares over LossLanes lanes and a
// fixed pairwise tree (laneSum). The GPU's exp and log are CUDA's, so the two agree within a
// few float64 ulps, not bit for bit. The gradient is rounded once from float64 as well.

// rowLSE is log Σ_e exp(x[e]) in float64: the row maximum m first, then m + log Σ exp(x−m)
// (m itself when m is infinite; NaN when x holds a NaN, even beside +Inf).
func rowLSE[F float32 | float64](x []F) float64 {
	m, s := rowMaxSum(x)
	if math.IsInf(m, 0) {
		return m
	}
	return m + math.Log(s)
}

func checkZ(name string, n, T, E int) error {
	if T < 1 || E < 1 {
		return fmt.Errorf("gomoe: %s: T=%d E=%d, want both >= 1", name, T, E)
	}
	if float64(T)*float64(E) > maxElems { // T·E must not wrap around
		return fmt.Errorf("gomoe: %s: T=%d E=%d are too large (more than 2^50 elements)", name, T, E)
	}
	if n != T*E {
		return fmt.Errorf("gomoe: %s: %d logits, want T·E = %d", name, n, T*E)
	}
	return nil
}

// ZLossForward returns the router z-loss scale · Σ_t lse(x[t])² for logits x [T,E]
// (lse(x[t]) = log Σ_e exp(x[t,e]); the layer uses scale = coeff/T), computed in float64 and
// rounded once.
func ZLossForward[F float32 | float64](x []F, T, E int, scale float64) (F, error) {
	if err := checkZ("ZLossForward", len(x), T, E); err != nil {
		return 0, err
	}
	total := laneSum(T, func(t int) float64 {
		l := rowLSE(x[t*E : (t+1)*E])
		return float64(l * l)
	})
	return F(float64(total * scale)), nil
}

// ZLossBackward writes the gradient of ZLossForward into dx [T,E] (overwriting it):
// dx[t,e] = (2·scale·dy) · lse(x[t]) · softmax(x[t])_e, the softmax taken as exp(x[t,e] − m)/s
// from the row maximum m and s = Σ_e exp(x[t,e] − m) (a row whose maximum is infinite or NaN:
// exp(x[t,e] − m), as the arithmetic gives).
func ZLossBackward[F float32 | float64](dx, x []F, T, E int, scale, dy float64) error {
	const name = "ZLossBackward"
	if err := checkZ(name, len(x), T, E); err != nil {
		return err
	}
	if len(dx) != T*E {
		return fmt.Errorf("gomoe: %s: gradient of %d elements, want T·E = %d", name, len(dx), T*E)
	}
	if err := checkInPlace(name, []span{spanOf("dx", dx)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	c := float64(2 * scale * dy)
	for t := 0; t < T; t++ {
		row := x[t*E : (t+1)*E]
		m, s := rowMaxSum(row)
		if math.IsInf(m, 0) || math.IsNaN(m) {
			// lse = m (or NaN): exp(x − lse) gives the arithmetic's NaN and 0 as before
			cl := float64(c * m)
			for e, v := range row {
				dx[t*E+e] = F(float64(cl * math.Exp(float64(v)-m)))
			}
			continue
		}
		// The softmax as exp(x − m)/s, not exp(x − lse): lse = m + log s, rounded, loses
		// log s once m is large against it (from about 10¹⁵), which doubled the gradient of
		// a row [10³⁰, 10³⁰].
		cl := float64(c * float64(m+math.Log(s)))
		for e, v := range row {
			dx[t*E+e] = F(float64(cl * float64(math.Exp(float64(v)-m)/s)))
		}
	}
	return nil
}
