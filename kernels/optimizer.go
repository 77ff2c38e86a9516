package kernels

import (
	"math"

	"github.com/gomoe/gomoe/bfloat16"
)

// The optimiser updates on the CPU (SGD, Adam, and both for bfloat16 weights through float32
// master weights). The CUDA twins are the methods of the same names on *CUDA (optimizer_cuda.go,
// kernels in optimizer.cuh); every operation is rounded separately in the parameter's type (no
// fused multiply-add), so the two agree bit for bit.

// SGDUpdate updates p in place: p = p − lr·(g + wd·p), every operation rounded to F.
func SGDUpdate[F float32 | float64](p, g []F, lr, wd float64) error {
	if err := sameLen("SGD", len(p), len(g)); err != nil {
		return err
	}
	if err := checkDisjoint("SGDUpdate", []span{spanOf("p", p)}, []span{spanOf("g", g)}); err != nil {
		return err
	}
	l, w := F(lr), F(wd)
	for i, x := range p {
		p[i] = x - F(l*F(g[i]+F(w*x)))
	}
	return nil
}

// AdamUpdate updates p and its moments m, v in place (Adam; decoupled weight decay wd, AdamW,
// when wd > 0), every operation rounded to F:
//
//	m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g·g
//	p = p − lr·((m/c1) / (sqrt(v/c2) + eps) + wd·p)
//
// c1 = 1−b1^t and c2 = 1−b2^t are the bias corrections of step t ≥ 1. Where g·g overflows
// (|g| > 1.8·10¹⁹ in float32) v takes ((1−b2)·g)·g, and where v/c2 overflows sqrt(v/c2) is
// sqrt(v)/sqrt(c2), so one huge gradient does not make v infinite and freeze the weight (as
// long as (1−b2)·g·g fits: |g| up to 5.8·10²⁰ in float32 with b2 = 0.999, as in PyTorch).
// Every other element gets the formula's bits.
func AdamUpdate[F float32 | float64](p, g, m, v []F, lr, b1, b2, eps, c1, c2, wd float64) error {
	if err := sameLen("Adam", len(p), len(g), len(m), len(v)); err != nil {
		return err
	}
	if err := checkDisjoint("AdamUpdate", []span{spanOf("p", p), spanOf("m", m), spanOf("v", v)}, []span{spanOf("g", g)}); err != nil {
		return err
	}
	L, B1, B2, Eps, C1, C2, W := F(lr), F(b1), F(b2), F(eps), F(c1), F(c2), F(wd)
	NB1, NB2 := F(1-b1), F(1-b2)
	var k32 *[10]float32
	if _, ok := any(p).([]float32); ok && hasAdamAsm {
		k32 = &[10]float32{float32(L), float32(B1), float32(B2), float32(Eps), float32(C1), float32(C2), float32(W), float32(NB1), float32(NB2), float32(math.Inf(1))}
	}
	parallelRange(len(p), actBlock, func(lo, hi int) { // element-wise: the split changes no bit
		for lo < hi {
			end := hi
			if k32 != nil { // the same operations 8 lanes at a time (internal/simd/adam_amd64.s): the same bits
				lo += adam32(any(p[lo:hi]).([]float32), any(g[lo:hi]).([]float32), any(m[lo:hi]).([]float32), any(v[lo:hi]).([]float32), k32)
				if lo+8 <= hi {
					end = lo + 8 // a group the kernel left (an overflowing g·g or v/c2): this loop takes it, the kernel the rest
				}
			}
			adamElems(p[lo:end], g[lo:end], m[lo:end], v[lo:end], L, B1, B2, Eps, C1, C2, W, NB1, NB2)
			lo = end
		}
	})
	return nil
}

// adamElems is AdamUpdate's step in Go on p, g, m, v (equal lengths), the scalars rounded to F.
func adamElems[F float32 | float64](p, g, m, v []F, L, B1, B2, Eps, C1, C2, W, NB1, NB2 F) {
	for i := range p {
		x, gi := p[i], g[i]
		mi := F(F(B1*m[i]) + F(NB1*gi))
		gg := F(gi * gi)
		if math.IsInf(float64(gg), 1) { // |g| > √max: (1−b2)·g first keeps v finite
			gg = F(F(NB2*gi) * gi)
		} else {
			gg = F(NB2 * gg)
		}
		vi := F(F(B2*v[i]) + gg)
		m[i], v[i] = mi, vi
		den := F(math.Sqrt(float64(F(vi / C2))))
		if math.IsInf(float64(den), 1) { // v/c2 overflowed: √v/√c2 does not
			den = F(F(math.Sqrt(float64(vi))) / F(math.Sqrt(float64(C2))))
		}
		step := F(F(mi/C1) / F(den+Eps))
		p[i] = x - F(L*F(step+F(W*x)))
	}
}

// SGDUpdateBF16 updates bfloat16 weights p through their float32 master copy w32: w32 takes
// SGDUpdate's float32 step with the gradient g widened (exactly) to float32, and p becomes w32
// rounded to nearest even.
func SGDUpdateBF16(p, g []bfloat16.BFloat16, w32 []float32, lr, wd float64) error {
	if err := sameLen("SGD", len(p), len(g), len(w32)); err != nil {
		return err
	}
	if err := checkDisjoint("SGDUpdateBF16", []span{spanOf("p", p), spanOf("w32", w32)}, []span{spanOf("g", g)}); err != nil {
		return err
	}
	l, w := float32(lr), float32(wd)
	for i, x := range w32 {
		x -= float32(l * float32(g[i].Float32()+float32(w*x)))
		w32[i] = x
		p[i] = bfloat16.FromFloat32(x)
	}
	return nil
}

// AdamUpdateBF16 is AdamUpdate on the float32 master copy w32 of bfloat16 weights p (float32
// moments m, v; gradient g widened exactly), after which p is w32 rounded to nearest even.
func AdamUpdateBF16(p, g []bfloat16.BFloat16, w32, m, v []float32, lr, b1, b2, eps, c1, c2, wd float64) error {
	if err := sameLen("Adam", len(p), len(g), len(w32), len(m), len(v)); err != nil {
		return err
	}
	if err := checkDisjoint("AdamUpdateBF16", []span{spanOf("p", p), spanOf("w32", w32), spanOf("m", m), spanOf("v", v)}, []span{spanOf("g", g)}); err != nil {
		return err
	}
	// Widen the gradient a chunk at a time into a fixed buffer: no weight-sized allocation per
	// step, and the element-wise update gives the same bits as in one pass.
	var buf [1024]float32
	for lo := 0; lo < len(g); lo += len(buf) {
		hi := min(lo+len(buf), len(g))
		g32 := buf[:hi-lo]
		if err := bfloat16.ToFloat32s(g32, g[lo:hi]); err != nil {
			return err
		}
		if err := AdamUpdate(w32[lo:hi], g32, m[lo:hi], v[lo:hi], lr, b1, b2, eps, c1, c2, wd); err != nil {
			return err
		}
	}
	return bfloat16.FromFloat32s(p, w32)
}
