package kernels

import (
	"fmt"
	"math"
)

// The element-wise activations on the CPU (SwiGLU, GELU, sigmoid), forward and backward. The
// CUDA twins are the methods of the same names on *CUDA (activation_cuda.go, kernels in
// activation.cuh). They use transcendental functions, so the two agree within a few ulps.

// Activation selects an element-wise activation of ActivationForward and ActivationBackward.
// It is gomoe's one activation type: package moe's Activation (the experts' FFN type) is this
// type, and its SwiGLU and GELU are these constants. The values are the kind numbers the CUDA
// kernels take.
//
// The zero Activation names none: the kernels reject it, and a moe.Config reads it as SwiGLU
// (moe's default).
type Activation int

const (
	// SwiGLU is out = silu(a)·b = a·σ(a)·b (two inputs).
	SwiGLU Activation = 1
	// GELU is the tanh approximation out = 0.5·a·(1 + tanh(√(2/π)·(a + 0.044715·a³))).
	GELU Activation = 2
	// Sigmoid is out = σ(a) = 1/(1+e^−a).
	Sigmoid Activation = 3
)

// Inputs is the number of inputs of the activation (2 for SwiGLU, else 1).
func (k Activation) Inputs() int {
	if k == SwiGLU {
		return 2
	}
	return 1
}

// String names the activation.
func (k Activation) String() string {
	switch k {
	case SwiGLU:
		return "SwiGLU"
	case GELU:
		return "GELU"
	case Sigmoid:
		return "Sigmoid"
	}
	return fmt.Sprintf("Activation(%d)", int(k))
}

func (k Activation) valid() bool { return k >= SwiGLU && k <= Sigmoid }

const (
	geluC = 0.7978845608028654 // √(2/π)
	geluA = 0.044715
)

// sigmoid is σ(x), computed without overflow for either sign.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// ActivationForward writes out = kind(a[, b]) element-wise (b is used by SwiGLU only).
// Computed in float64 and rounded once; in float32 on a CPU with the vector sigmoid
// (sigmoidPair32, within 2 float32 ulps of σ), SwiGLU, GELU (as x·σ(2u)) and Sigmoid take σ
// from it and do the rest in float64, rounded once.
func ActivationForward[F float32 | float64](kind Activation, out, a, b []F) error {
	if !kind.valid() {
		return fmt.Errorf("gomoe: activation: unknown kind %d", int(kind))
	}
	if err := sameLen(kind.String(), len(out), len(a)); err != nil {
		return err
	}
	if err := checkInPlace("ActivationForward", []span{spanOf("out", out)}, []span{spanOf("a", a), spanOf("b", b)}); err != nil {
		return err
	}
	if kind == SwiGLU {
		if err := sameLen(kind.String(), len(out), len(b)); err != nil {
			return err
		}
	}
	parallelRange(len(out), actBlock, func(lo, hi int) {
		var sc actScratch
		actForward(&sc, kind, out[lo:hi], a[lo:hi], part(b, lo, hi))
	})
	return nil
}

// part is s[lo:hi], or nil where s is shorter (an input the activation does not read).
func part[F float32 | float64](s []F, lo, hi int) []F {
	if len(s) < hi {
		return nil
	}
	return s[lo:hi]
}

// actForward is ActivationForward's arithmetic on one span, serially (sc: the float32 path's
// scratch).
func actForward[F float32 | float64](sc *actScratch, kind Activation, out, a, b []F) {
	if o, ok := any(out).([]float32); ok && hasSigmoidAsm {
		act32Forward(sc, kind, o, any(a).([]float32), any(b).([]float32))
		return
	}
	for i := range out {
		x := float64(a[i])
		switch kind {
		case SwiGLU:
			out[i] = F(x * sigmoid(x) * float64(b[i]))
		case GELU:
			out[i] = F(0.5 * x * (1 + math.Tanh(geluC*(x+geluA*x*x*x))))
		default:
			out[i] = F(sigmoid(x))
		}
	}
}

// ActivationBackward writes into out the gradient of input which (0: a, 1: b) from the output
// gradient dy, the inputs a, b (SwiGLU) and the output y (Sigmoid):
//
//	SwiGLU  da = dy·b·σ(a)·(1 + a·(1−σ(a))),  db = dy·a·σ(a)
//	GELU    da = dy·(½(1+th) + ½a(1−th²)·c·(1 + 3·0.044715·a²)),  th = tanh(c(a + 0.044715a³))
//	Sigmoid da = dy·y·(1−y)
func ActivationBackward[F float32 | float64](kind Activation, which int, out, a, b, y, dy []F) error {
	if !kind.valid() {
		return fmt.Errorf("gomoe: activation: unknown kind %d", int(kind))
	}
	if which < 0 || which >= kind.Inputs() {
		return fmt.Errorf("gomoe: %v has no input %d", kind, which)
	}
	n := len(out)
	if err := sameLen(kind.String(), n, len(dy)); err != nil {
		return err
	}
	if err := checkInPlace("ActivationBackward", []span{spanOf("out", out)}, []span{spanOf("a", a), spanOf("b", b), spanOf("y", y), spanOf("dy", dy)}); err != nil {
		return err
	}
	switch kind {
	case SwiGLU:
		if err := sameLen(kind.String(), n, len(a), len(b)); err != nil {
			return err
		}
	case GELU:
		if err := sameLen(kind.String(), n, len(a)); err != nil {
			return err
		}
	default:
		if err := sameLen(kind.String(), n, len(y)); err != nil {
			return err
		}
	}
	parallelRange(n, actBlock, func(lo, hi int) {
		var sc actScratch
		actBackward(&sc, kind, which, out[lo:hi], part(a, lo, hi), part(b, lo, hi), part(y, lo, hi), dy[lo:hi])
	})
	return nil
}

// actBackward is ActivationBackward's arithmetic on one span, serially (sc as in actForward).
func actBackward[F float32 | float64](sc *actScratch, kind Activation, which int, out, a, b, y, dy []F) {
	if kind == SwiGLU {
		if which == 0 {
			swigluBackward(sc, out, nil, a, b, dy)
		} else {
			swigluBackward(sc, nil, out, a, b, dy)
		}
		return
	}
	if o, ok := any(out).([]float32); ok && hasSigmoidAsm && kind == GELU {
		act32GELUBackward(sc, o, any(a).([]float32), any(dy).([]float32))
		return
	}
	for i := range out {
		g := float64(dy[i])
		switch kind {
		case GELU:
			x := float64(a[i])
			th := math.Tanh(geluC * (x + geluA*x*x*x))
			d := 0.5 * (1 + th)
			if s := 1 - th*th; s != 0 { // where tanh has saturated, (3·0.044715·x)·x may overflow: 0·∞
				d += 0.5 * x * s * geluC * (1 + 3*geluA*x*x)
			}
			out[i] = F(g * d)
		default:
			v := float64(y[i])
			out[i] = F(g * v * (1 - v))
		}
	}
}

// swigluBackward writes SwiGLU's da and db (either may be nil) from one sigmoid per element,
// serially: da = dy·b·σ(a)·(1 + a·(1−σ(a))), db = dy·a·σ(a).
func swigluBackward[F float32 | float64](sc *actScratch, da, db, a, b, dy []F) {
	if _, ok := any(a).([]float32); ok && hasSigmoidAsm {
		act32SwiGLUBackward(sc, any(da).([]float32), any(db).([]float32), any(a).([]float32), any(b).([]float32), any(dy).([]float32))
		return
	}
	for i := range a {
		g, x := float64(dy[i]), float64(a[i])
		s := sigmoid(x)
		if da != nil {
			da[i] = F(g * float64(b[i]) * s * (1 + x*(1-s)))
		}
		if db != nil {
			db[i] = F(g * x * s)
		}
	}
}

// SwiGLUPackedForward writes out [rows,f] = silu(a)·b for z [rows,2f] holding each row's a
// (columns 0..f-1) and b (columns f..2f-1) side by side: the SwiGLU of a gate and an up
// projection computed as one matmul with the two weights packed as one [H,2f] matrix. The
// arithmetic per element is ActivationForward's (so the two give the same bits); the CUDA twin
// is (*CUDA).SwiGLUPackedForward.
func SwiGLUPackedForward[F float32 | float64](out, z []F, f int) error {
	rows, err := packedRows("SwiGLUPackedForward", len(out), len(z), f)
	if err != nil {
		return err
	}
	if err := checkInPlace("SwiGLUPackedForward", []span{spanOf("out", out)}, []span{spanOf("z", z)}); err != nil {
		return err
	}
	parallelRange(rows, max(1, actBlock/f), func(lo, hi int) {
		var sc actScratch // one per span, not per row: clearing it costs more than a short row
		for r := lo; r < hi; r++ {
			zr := z[2*r*f : 2*(r+1)*f]
			actForward(&sc, SwiGLU, out[r*f:(r+1)*f], zr[:f], zr[f:])
		}
	})
	return nil
}

// SwiGLUPackedBackward writes dz [rows,2f], the gradients of both halves of z (see
// SwiGLUPackedForward), from the output gradient dy [rows,f]: dz[:, :f] = ActivationBackward's
// da and dz[:, f:] its db, bit for bit. dz must not share memory with z.
func SwiGLUPackedBackward[F float32 | float64](dz, z, dy []F, f int) error {
	rows, err := packedRows("SwiGLUPackedBackward", len(dy), len(z), f)
	if err != nil {
		return err
	}
	if err := sameLen("SwiGLUPackedBackward", len(dz), len(z)); err != nil {
		return err
	}
	// Not in place either: a row's db reads its a after da is written.
	if err := checkDisjoint("SwiGLUPackedBackward", []span{spanOf("dz", dz)}, []span{spanOf("z", z), spanOf("dy", dy)}); err != nil {
		return err
	}
	parallelRange(rows, max(1, actBlock/f), func(lo, hi int) {
		var sc actScratch // one per span, as in SwiGLUPackedForward
		for r := lo; r < hi; r++ {
			zr, dzr, g := z[2*r*f:2*(r+1)*f], dz[2*r*f:2*(r+1)*f], dy[r*f:(r+1)*f]
			swigluBackward(&sc, dzr[:f], dzr[f:], zr[:f], zr[f:], g)
		}
	})
	return nil
}

// packedRows checks the lengths of a packed SwiGLU, n = rows·f outputs of 2n inputs, and
// returns rows.
func packedRows(what string, n, nz, f int) (int, error) {
	if f < 1 || n%f != 0 || nz != 2*n {
		return 0, fmt.Errorf("gomoe: %s: %d outputs and %d inputs are not rows of f=%d and 2f", what, n, nz, f)
	}
	return n / f, nil
}

// actTail is where the float32 activations leave the vector sigmoid: below it σ would be
// subnormal in float32 (too few bits for the products that follow), so those rare elements
// take the float64 sigmoid.
const actTail = -80

// actChunk is the number of elements whose sigmoids act32Forward and act32SwiGLUBackward
// compute in one call of the vector kernel.
const actChunk = 512

// actScratch is the float32 activations' scratch for one chunk: the sigmoids σ(x) and σ(−x)
// and, for GELU, its argument t and rounding error d (geluArgs). A caller keeps one for a whole
// span of work, so that it is cleared once, not per call.
type actScratch struct {
	s, sm, t [actChunk]float32
	d        [actChunk]float64
}

// GELU in float32 with the vector sigmoid: 0.5·x·(1 + tanh(u)) = x·σ(2u), u = c·(x + 0.044715x³).
// t = 2u is computed in float64 and rounded to float32 for the vector kernel; the rounding error
// d = 2u − t is put back to first order, σ(2u) ≈ σ(t)·(1 + σ(−t)·d) and σ(−2u) ≈ σ(−t)·(1 − σ(t)·d),
// in float64 (d is below half a float32 ulp of t, so the neglected term is below 2⁻⁴⁸·t²).

// geluArgs computes 2u for x in float64 and fills t with it rounded to float32, d with the rest.
func geluArgs(t []float32, d []float64, a []float32) {
	for i, v := range a {
		x := float64(v)
		// σ(±1000) is already σ(±∞) in float64. Clamping keeps t finite: float32 overflows
		// from 2u ≈ 3.4e38 (|x| ≈ 2e13) on, where d = 2u − t would be ∓∞ and σ(−t)·d NaN.
		u2 := max(-1000, min(1000, 2*geluC*(x+geluA*x*x*x)))
		t[i] = float32(u2)
		d[i] = u2 - float64(t[i])
	}
}

// geluSigmoids fills t and d with geluArgs of x and s, sm with σ(t) and σ(−t) (the vector
// sigmoid): what the float32 GELU forward and backward start each chunk with.
func geluSigmoids(s, sm, t []float32, d []float64, x []float32) {
	geluArgs(t, d, x)
	sigmoidPair32(s, sm, t)
}

// act32Forward is ActivationForward in float32 with the vector sigmoid.
func act32Forward(sc *actScratch, kind Activation, out, a, b []float32) {
	hi := len(out)
	s, sm, t, d := &sc.s, &sc.sm, &sc.t, &sc.d
	for c := 0; c < hi; c += actChunk {
		e := min(c+actChunk, hi)
		x := a[c:e]
		if kind == GELU {
			geluSigmoids(s[:len(x)], sm[:len(x)], t[:len(x)], d[:len(x)], x)
			o := out[c:e]
			for i, v := range x {
				if t[i] < actTail {
					o[i] = float32(float64(v) * sigmoid(float64(t[i])+d[i]))
					continue
				}
				o[i] = float32(float64(v) * (float64(s[i]) * (1 + float64(sm[i])*d[i])))
			}
			continue
		}
		sigmoidPair32(s[:len(x)], sm[:len(x)], x)
		if kind == Sigmoid {
			copy(out[c:e], s[:len(x)]) // a subnormal σ is still σ within 2 subnormal steps
			continue
		}
		o, bb := out[c:e], b[c:e]
		for i, v := range x {
			if v < actTail {
				xv := float64(v)
				o[i] = float32(xv * sigmoid(xv) * float64(bb[i]))
				continue
			}
			o[i] = float32(float64(v) * float64(s[i]) * float64(bb[i]))
		}
	}
}

// act32SwiGLUBackward is ActivationBackward's SwiGLU in float32 with the vector sigmoid
// (1 − σ(a) is taken as σ(−a), without cancellation): da and db (either may be nil) from one
// sigmoid per element.
func act32SwiGLUBackward(sc *actScratch, da, db, a, b, dy []float32) {
	hi := len(a)
	sb, smb := &sc.s, &sc.sm
	for c := 0; c < hi; c += actChunk {
		e := min(c+actChunk, hi)
		x := a[c:e]
		s, sm := sb[:len(x)], smb[:len(x)]
		sigmoidPair32(s, sm, x)
		g := dy[c:e]
		g = g[:len(x)]
		if da != nil {
			o, bb := da[c:e], b[c:e]
			o, bb = o[:len(x)], bb[:len(x)]
			for i, v := range x {
				xv := float64(v)
				si, smi := float64(s[i]), float64(sm[i])
				if v < actTail {
					si, smi = sigmoid(xv), sigmoid(-xv)
				}
				o[i] = float32(float64(g[i]) * float64(bb[i]) * si * (1 + xv*smi))
			}
		}
		if db != nil {
			o := db[c:e]
			o = o[:len(x)]
			for i, v := range x {
				xv := float64(v)
				si := float64(s[i])
				if v < actTail {
					si = sigmoid(xv)
				}
				o[i] = float32(float64(g[i]) * xv * si)
			}
		}
	}
}

// act32GELUBackward is ActivationBackward's GELU in float32 with the vector sigmoid:
// da = dy·(σ(2u) + 2x·σ(2u)·σ(−2u)·c·(1 + 3·0.044715·x²)), the tanh form rewritten.
func act32GELUBackward(sc *actScratch, out, a, dy []float32) {
	hi := len(out)
	s, sm, t, d := &sc.s, &sc.sm, &sc.t, &sc.d
	for c := 0; c < hi; c += actChunk {
		e := min(c+actChunk, hi)
		x := a[c:e]
		geluSigmoids(s[:len(x)], sm[:len(x)], t[:len(x)], d[:len(x)], x)
		o, g := out[c:e], dy[c:e]
		for i, v := range x {
			xv := float64(v)
			sp := float64(s[i]) * (1 + float64(sm[i])*d[i])
			sn := float64(sm[i]) * (1 - float64(s[i])*d[i])
			if t[i] < actTail {
				sp, sn = sigmoid(float64(t[i])+d[i]), sigmoid(-(float64(t[i]) + d[i]))
			}
			d := sp
			if sp != 0 && sn != 0 { // saturated (σ(−2u) or σ(2u) is 0): 2x·0 is NaN at x = ±Inf
				d += 2 * xv * sp * sn * geluC * (1 + 3*geluA*xv*xv)
			}
			o[i] = float32(float64(g[i]) * d)
		}
	}
}
