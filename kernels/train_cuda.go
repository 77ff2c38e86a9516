//go:build gomoecuda

package kernels

import (
	"fmt"
	"math"

	"gorgonia.org/cu"
)

// CUDA twins of train.go and the device engine's arithmetic (kernels in train.cuh). Like the
// other launchers they enqueue on the default stream and never wait.

// StatusNaNScore is the status bit TopK sets when a selection or group score is NaN (such a
// score ranks lowest).
const StatusNaNScore = 8

func init() {
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "binop_"+s, "pw_fwd_"+s, "pw_bwd_"+s)
	}
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "row_fwd_"+s, "row_bwd_"+s, "topk_"+s, "gather_topk_"+s,
			"gather_topk_bwd_"+s, "sgd_"+s, "adam_"+s)
	}
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "scale_rows_"+s, "row_dot_"+s)
	}
	kernelNames = append(kernelNames, "sgd_bf16", "adam_bf16",
		"convert_f32_bf16", "convert_bf16_f32", "convert_f32_f64", "convert_f64_f32")
}

// Convert writes out[i] = in[i] converted from dtype from to dtype to (rounded to nearest
// even): float32 ↔ bfloat16 and float32 ↔ float64.
func (c *CUDA) Convert(from, to DType, out, in cu.DevicePtr, n int64) error {
	ok := (from == F32 && (to == BF16 || to == F64)) || (to == F32 && (from == BF16 || from == F64))
	if !ok {
		return fmt.Errorf("gomoe: device conversion from %v to %v is not supported", from, to)
	}
	return c.do(func() error {
		return c.launch("convert_"+from.suffix()+"_"+to.suffix(), gridFor(n, 256), 256, 0, *new(args).p(in).p(out).l(n))
	})
}

// SGDUpdateBF16 is the CUDA twin of the CPU SGDUpdateBF16: the float32 master weights w32
// take the float32 SGD step and the bfloat16 weights p become the master rounded.
func (c *CUDA) SGDUpdateBF16(p, g, w32 cu.DevicePtr, n int64, lr, wd float64) error {
	return c.do(func() error {
		return c.launch("sgd_bf16", gridFor(n, 256), 256, 0, *new(args).p(p).p(g).p(w32).d(lr).d(wd).l(n))
	})
}

// AdamUpdateBF16 is the CUDA twin of the CPU AdamUpdateBF16 (float32 master weights w32 and
// moments m, v; bfloat16 weights p and gradients g).
func (c *CUDA) AdamUpdateBF16(p, g, w32, m, v cu.DevicePtr, n int64, lr, b1, b2, eps, c1, c2, wd float64) error {
	return c.do(func() error {
		return c.launch("adam_bf16", gridFor(n, 256), 256, 0,
			*new(args).p(p).p(g).p(w32).p(m).p(v).d(lr).d(b1).d(b2).d(eps).d(c1).d(c2).d(wd).l(n))
	})
}

func (a *args) d(v float64) *args { *a = append(*a, math.Float64bits(v)); return a }

// BinaryOp is an element-wise arithmetic operation of Binary.
type BinaryOp int

const (
	// OpAdd is a + b.
	OpAdd BinaryOp = iota
	// OpSub is a − b.
	OpSub
	// OpMul is a·b.
	OpMul
	// OpDiv is a / b.
	OpDiv
)

// Binary writes out[i] = a[i] op b[i] for n elements (bfloat16 computes in float32 and rounds
// once). A zero a (or b) pointer means the scalar s instead of that tensor (not both). out may
// alias a or b.
func (c *CUDA) Binary(d DType, op BinaryOp, out, a, b cu.DevicePtr, s float64, n int64) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device %v: unknown dtype %v", op, d)
	}
	if op < OpAdd || op > OpDiv {
		return fmt.Errorf("gomoe: device arithmetic: unknown op %d", int(op))
	}
	mode := 0
	switch {
	case a == 0 && b == 0:
		return fmt.Errorf("gomoe: device arithmetic: two scalars")
	case b == 0:
		mode = 1
	case a == 0:
		mode = 2
	}
	return c.do(func() error {
		return c.launch("binop_"+d.suffix(), gridFor(n, 256), 256, 0,
			*new(args).i(int(op)).i(mode).p(a).p(b).d(s).p(out).l(n))
	})
}

// ActivationForward writes out = kind(a[, b]) for n elements (b: SwiGLU only).
func (c *CUDA) ActivationForward(d DType, kind Activation, out, a, b cu.DevicePtr, n int64) error {
	if !d.valid() || !kind.valid() {
		return fmt.Errorf("gomoe: device activation: dtype %v, kind %d", d, int(kind))
	}
	return c.do(func() error {
		return c.launch("pw_fwd_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).i(int(kind)).p(a).p(b).p(out).l(n))
	})
}

// ActivationBackward writes into out the gradient of input which (see the CPU
// ActivationBackward) for n elements.
func (c *CUDA) ActivationBackward(d DType, kind Activation, which int, out, a, b, y, dy cu.DevicePtr, n int64) error {
	if !d.valid() || !kind.valid() || which < 0 || which >= kind.Inputs() {
		return fmt.Errorf("gomoe: device activation gradient: dtype %v, kind %d, input %d", d, int(kind), which)
	}
	return c.do(func() error {
		return c.launch("pw_bwd_"+d.suffix(), gridFor(n, 256), 256, 0,
			*new(args).i(int(kind)).i(which).p(a).p(b).p(y).p(dy).p(out).l(n))
	})
}

func rowDType(k RowOp, d DType, cols int) error {
	if k != RowSoftmax && k != RowNormalize {
		return fmt.Errorf("gomoe: device row op: unknown kind %d", int(k))
	}
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %v: dtype %v, want float32 or float64", k, d)
	}
	if cols < 1 {
		return fmt.Errorf("gomoe: device %v: %d columns", k, cols)
	}
	return nil
}

// RowForward writes y = kind(x) for every row of x [rows, cols] (one warp per row).
func (c *CUDA) RowForward(d DType, kind RowOp, y, x cu.DevicePtr, rows int64, cols int) error {
	if err := rowDType(kind, d, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("row_fwd_"+d.suffix(), gridFor(rows*32, 256), 256, 0, *new(args).i(int(kind)).p(x).p(y).l(rows).i(cols))
	})
}

// RowBackward writes dx from x (RowNormalize only), y and dy, row by row.
func (c *CUDA) RowBackward(d DType, kind RowOp, dx, x, y, dy cu.DevicePtr, rows int64, cols int) error {
	if err := rowDType(kind, d, cols); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("row_bwd_"+d.suffix(), gridFor(rows*32, 256), 256, 0,
			*new(args).i(int(kind)).p(x).p(y).p(dy).p(dx).l(rows).i(cols))
	})
}

// TopK writes ids [T,K] int32: for every row of scores [T,E] (float32 or float64; bias [E] of
// the same type, or 0) the K experts with the highest score+bias, with groups as in op.TopK
// (groups 1: none; per = max(1, K/kept)). A NaN score sets StatusNaNScore. E ≤ 1024, groups ≤ 64.
func (c *CUDA) TopK(d DType, ids, scores, bias cu.DevicePtr, T int64, E, K, groups, kept int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device TopK: dtype %v, want float32 or float64", d)
	}
	if groups < 1 {
		groups = 1
	}
	if kept < 1 {
		kept = 1
	}
	switch {
	case E < 1 || E > 1024:
		return fmt.Errorf("gomoe: device TopK: E=%d, want 1..1024", E)
	case K < 1 || K > E:
		return fmt.Errorf("gomoe: device TopK: K=%d, want 1..E=%d", K, E)
	case groups > 64 || E%groups != 0 || kept > groups || K > kept*(E/groups):
		return fmt.Errorf("gomoe: device TopK: %d groups, %d kept for E=%d K=%d", groups, kept, E, K)
	}
	per := max(1, K/kept)
	return c.do(func() error {
		return c.launch("topk_"+d.suffix(), gridFor(T, 128), 128, 0,
			*new(args).p(scores).p(bias).p(ids).l(T).i(E).i(K).i(groups).i(kept).i(per).p(c.status))
	})
}

// GatherTopK writes out[t,k] = s[t, ids[t,k]] (0 for a negative id) for s [T,E]. An id >= E
// counts as -1 and sets StatusBadID.
func (c *CUDA) GatherTopK(d DType, out, s, ids cu.DevicePtr, T int64, E, K int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device GatherTopK: dtype %v", d)
	}
	tk := T * int64(K)
	return c.do(func() error {
		return c.launch("gather_topk_"+d.suffix(), gridFor(tk, 256), 256, 0, *new(args).p(s).p(ids).p(out).l(tk).i(E).i(K).p(c.status))
	})
}

// GatherTopKBackward writes ds [T,E]: zero except ds[t, ids[t,k]] += g[t,k] (an id >= E is
// skipped and sets StatusBadID).
func (c *CUDA) GatherTopKBackward(d DType, ds, g, ids cu.DevicePtr, T int64, E, K int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device GatherTopK gradient: dtype %v", d)
	}
	return c.do(func() error {
		return c.launch("gather_topk_bwd_"+d.suffix(), gridFor(T, 256), 256, 0, *new(args).p(g).p(ids).p(ds).l(T).i(E).i(K).p(c.status))
	})
}

// SGDUpdate is the CUDA twin of the CPU SGDUpdate on n elements (float32 or float64).
func (c *CUDA) SGDUpdate(d DType, p, g cu.DevicePtr, n int64, lr, wd float64) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device SGD: dtype %v, want float32 or float64", d)
	}
	return c.do(func() error {
		return c.launch("sgd_"+d.suffix(), gridFor(n, 256), 256, 0, *new(args).p(p).p(g).d(lr).d(wd).l(n))
	})
}

// AdamUpdate is the CUDA twin of the CPU AdamUpdate on n elements (float32 or float64).
func (c *CUDA) AdamUpdate(d DType, p, g, m, v cu.DevicePtr, n int64, lr, b1, b2, eps, c1, c2, wd float64) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device Adam: dtype %v, want float32 or float64", d)
	}
	return c.do(func() error {
		return c.launch("adam_"+d.suffix(), gridFor(n, 256), 256, 0,
			*new(args).p(p).p(g).p(m).p(v).d(lr).d(b1).d(b2).d(eps).d(c1).d(c2).d(wd).l(n))
	})
}

// ScaleRows writes y[r,c] = x[r,c]·s[r] for x [rows, cols] of d and s [rows] of d's probs type
// (float32 for bfloat16).
func (c *CUDA) ScaleRows(d DType, y, x, s cu.DevicePtr, rows int64, cols int) error {
	if !d.valid() || cols < 1 {
		return fmt.Errorf("gomoe: device ScaleRows: dtype %v, %d columns", d, cols)
	}
	return c.do(func() error {
		return c.launch("scale_rows_"+d.suffix(), gridFor(rows*int64(cols), 256), 256, 0, *new(args).p(x).p(s).p(y).l(rows).i(cols))
	})
}

// RowDot writes out[r] = Σ_c a[r,c]·b[r,c] (out in d's probs type), one warp per row.
func (c *CUDA) RowDot(d DType, out, a, b cu.DevicePtr, rows int64, cols int) error {
	if !d.valid() || cols < 1 {
		return fmt.Errorf("gomoe: device RowDot: dtype %v, %d columns", d, cols)
	}
	return c.do(func() error {
		return c.launch("row_dot_"+d.suffix(), gridFor(rows*32, 256), 256, 0, *new(args).p(a).p(b).p(out).l(rows).i(cols))
	})
}
