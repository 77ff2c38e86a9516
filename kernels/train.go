package kernels

import (
	"fmt"
	"math"

	"github.com/gomoe/gomoe/bfloat16"
)

// Training kernels on the CPU: the activations and row ops the moe layer uses, and the
// optimiser updates. Each has a CUDA twin of the same name on *CUDA (train_cuda.go, kernels in
// train.cuh). The activations and row ops use transcendental functions, so the two agree
// within a few ulps; the optimiser updates round every operation separately in the
// parameter's type (no fused multiply-add) and agree bit for bit.

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

// actBlock is the least number of elements of one parallel block of the element-wise kernels.
const actBlock = 8192

// sigmoid is σ(x), computed without overflow for either sign.
func sigmoid(x float64) float64 {
	if x >= 0 {
		return 1 / (1 + math.Exp(-x))
	}
	e := math.Exp(x)
	return e / (1 + e)
}

// sameLen checks that every length in s equals n.
func sameLen(what string, n int, s ...int) error {
	for _, m := range s {
		if err := checkLen(what, m, n); err != nil {
			return err
		}
	}
	return nil
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
	if o, ok := any(out).([]float32); ok && hasSigmoidAsm {
		act32Forward(kind, o, any(a).([]float32), any(b).([]float32))
		return nil
	}
	parallelRange(len(out), actBlock, func(lo, hi int) {
		for i := lo; i < hi; i++ {
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
	})
	return nil
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
	if o, ok := any(out).([]float32); ok && hasSigmoidAsm && kind == SwiGLU {
		act32SwiGLUBackward(which, o, any(a).([]float32), any(b).([]float32), any(dy).([]float32))
		return nil
	}
	if o, ok := any(out).([]float32); ok && hasSigmoidAsm && kind == GELU {
		act32GELUBackward(o, any(a).([]float32), any(dy).([]float32))
		return nil
	}
	parallelRange(n, actBlock, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := float64(dy[i])
			switch kind {
			case SwiGLU:
				x := float64(a[i])
				s := sigmoid(x)
				if which == 0 {
					out[i] = F(g * float64(b[i]) * s * (1 + x*(1-s)))
				} else {
					out[i] = F(g * x * s)
				}
			case GELU:
				x := float64(a[i])
				th := math.Tanh(geluC * (x + geluA*x*x*x))
				out[i] = F(g * (0.5*(1+th) + 0.5*x*(1-th*th)*geluC*(1+3*geluA*x*x)))
			default:
				v := float64(y[i])
				out[i] = F(g * v * (1 - v))
			}
		}
	})
	return nil
}

// actTail is where the float32 activations leave the vector sigmoid: below it σ would be
// subnormal in float32 (too few bits for the products that follow), so those rare elements
// take the float64 sigmoid.
const actTail = -80

// actChunk is the number of elements whose sigmoids act32Forward and act32SwiGLUBackward
// compute in one call of the vector kernel.
const actChunk = 512

// GELU in float32 with the vector sigmoid: 0.5·x·(1 + tanh(u)) = x·σ(2u), u = c·(x + 0.044715x³).
// t = 2u is computed in float64 and rounded to float32 for the vector kernel; the rounding error
// d = 2u − t is put back to first order, σ(2u) ≈ σ(t)·(1 + σ(−t)·d) and σ(−2u) ≈ σ(−t)·(1 − σ(t)·d),
// in float64 (d is below half a float32 ulp of t, so the neglected term is below 2⁻⁴⁸·t²).

// geluArgs computes 2u for x in float64 and fills t with it rounded to float32, d with the rest.
func geluArgs(t []float32, d []float64, a []float32) {
	for i, v := range a {
		x := float64(v)
		u2 := 2 * geluC * (x + geluA*x*x*x)
		t[i] = float32(u2)
		d[i] = u2 - float64(t[i])
	}
}

// act32Forward is ActivationForward in float32 with the vector sigmoid.
func act32Forward(kind Activation, out, a, b []float32) {
	parallelRange(len(out), actBlock, func(lo, hi int) {
		var s, sm, t [actChunk]float32
		var d [actChunk]float64
		for c := lo; c < hi; c += actChunk {
			e := min(c+actChunk, hi)
			x := a[c:e]
			if kind == GELU {
				geluArgs(t[:len(x)], d[:len(x)], x)
				sigmoidPair32(s[:len(x)], sm[:len(x)], t[:len(x)])
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
	})
}

// act32SwiGLUBackward is ActivationBackward's SwiGLU in float32 with the vector sigmoid
// (1 − σ(a) is taken as σ(−a), without cancellation).
func act32SwiGLUBackward(which int, out, a, b, dy []float32) {
	parallelRange(len(out), actBlock, func(lo, hi int) {
		var sb, smb [actChunk]float32
		for c := lo; c < hi; c += actChunk {
			e := min(c+actChunk, hi)
			x := a[c:e]
			s, sm := sb[:len(x)], smb[:len(x)]
			sigmoidPair32(s, sm, x)
			o, g := out[c:e], dy[c:e]
			o, g = o[:len(x)], g[:len(x)]
			if which == 0 {
				bb := b[c:e]
				bb = bb[:len(x)]
				for i, v := range x {
					xv := float64(v)
					si, smi := float64(s[i]), float64(sm[i])
					if v < actTail {
						si, smi = sigmoid(xv), sigmoid(-xv)
					}
					o[i] = float32(float64(g[i]) * float64(bb[i]) * si * (1 + xv*smi))
				}
				continue
			}
			for i, v := range x {
				xv := float64(v)
				si := float64(s[i])
				if v < actTail {
					si = sigmoid(xv)
				}
				o[i] = float32(float64(g[i]) * xv * si)
			}
		}
	})
}

// act32GELUBackward is ActivationBackward's GELU in float32 with the vector sigmoid:
// da = dy·(σ(2u) + 2x·σ(2u)·σ(−2u)·c·(1 + 3·0.044715·x²)), the tanh form rewritten.
func act32GELUBackward(out, a, dy []float32) {
	parallelRange(len(out), actBlock, func(lo, hi int) {
		var s, sm, t [actChunk]float32
		var d [actChunk]float64
		for c := lo; c < hi; c += actChunk {
			e := min(c+actChunk, hi)
			x := a[c:e]
			geluArgs(t[:len(x)], d[:len(x)], x)
			sigmoidPair32(s[:len(x)], sm[:len(x)], t[:len(x)])
			o, g := out[c:e], dy[c:e]
			for i, v := range x {
				xv := float64(v)
				sp := float64(s[i]) * (1 + float64(sm[i])*d[i])
				sn := float64(sm[i]) * (1 - float64(s[i])*d[i])
				if t[i] < actTail {
					sp, sn = sigmoid(float64(t[i])+d[i]), sigmoid(-(float64(t[i]) + d[i]))
				}
				o[i] = float32(float64(g[i]) * (sp + 2*xv*sp*sn*geluC*(1+3*geluA*xv*xv)))
			}
		}
	})
}

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
func RowForward[F float32 | float64](kind RowOp, y, x []F, cols int) error {
	if err := rowArgs(kind, cols, len(y), len(x)); err != nil {
		return err
	}
	if err := checkInPlace("RowForward", []span{spanOf("y", y)}, []span{spanOf("x", x)}); err != nil {
		return err
	}
	for r := 0; r < len(x); r += cols {
		xr, yr := x[r:r+cols], y[r:r+cols]
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
			continue
		}
		var s float64
		for _, v := range xr {
			s += float64(v)
		}
		for j, v := range xr {
			yr[j] = F(float64(v) / s)
		}
	}
	return nil
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
// c1 = 1−b1^t and c2 = 1−b2^t are the bias corrections of step t ≥ 1.
func AdamUpdate[F float32 | float64](p, g, m, v []F, lr, b1, b2, eps, c1, c2, wd float64) error {
	if err := sameLen("Adam", len(p), len(g), len(m), len(v)); err != nil {
		return err
	}
	if err := checkDisjoint("AdamUpdate", []span{spanOf("p", p), spanOf("m", m), spanOf("v", v)}, []span{spanOf("g", g)}); err != nil {
		return err
	}
	L, B1, B2, Eps, C1, C2, W := F(lr), F(b1), F(b2), F(eps), F(c1), F(c2), F(wd)
	NB1, NB2 := F(1-b1), F(1-b2)
	var k32 *[9]float32
	if _, ok := any(p).([]float32); ok && hasAdamAsm {
		k32 = &[9]float32{float32(L), float32(B1), float32(B2), float32(Eps), float32(C1), float32(C2), float32(W), float32(NB1), float32(NB2)}
	}
	parallelRange(len(p), actBlock, func(lo, hi int) { // element-wise: the split changes no bit
		if k32 != nil { // the same operations 8 lanes at a time (internal/simd/adam_amd64.s): the same bits
			lo += adam32(any(p[lo:hi]).([]float32), any(g[lo:hi]).([]float32), any(m[lo:hi]).([]float32), any(v[lo:hi]).([]float32), k32)
		}
		for i := lo; i < hi; i++ {
			x, gi := p[i], g[i]
			mi := F(F(B1*m[i]) + F(NB1*gi))
			vi := F(F(B2*v[i]) + F(NB2*F(gi*gi)))
			m[i], v[i] = mi, vi
			step := F(F(mi/C1) / F(F(math.Sqrt(float64(F(vi/C2))))+Eps))
			p[i] = x - F(L*F(step+F(W*x)))
		}
	})
	return nil
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
