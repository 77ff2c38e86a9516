//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// The three-term bfloat16 split on the device (split_bf16.cuh; CPU twin: split_bf16.go) and
// the float32-accurate GEMMs on bfloat16 tensor cores built on it.

func init() {
	kernelNames = append(kernelNames, "split_f32_bf16", "split_sum3")
}

// SplitBF16 is the device twin of SplitBF16 (same arguments, same bits): in holds rows·cols
// float32, out receives the bfloat16 pieces.
func (c *CUDA) SplitBF16(out, in cu.DevicePtr, rows, cols, rowStride, pieceStride int, pattern []int) error {
	if err := checkSplit(-1, -1, rows, cols, rowStride, pieceStride, pattern); err != nil {
		return err
	}
	if out == 0 || in == 0 {
		return fmt.Errorf("gomoe: SplitBF16: null device pointer")
	}
	return c.do(func() error { return c.splitBF16(out, in, rows, cols, rowStride, pieceStride, pattern) })
}

// splitBF16 launches split_f32_bf16; it must run inside c.do.
func (c *CUDA) splitBF16(out, in cu.DevicePtr, rows, cols, rowStride, pieceStride int, pattern []int) error {
	var bits uint32
	for j, k := range pattern {
		bits |= uint32(k) << (2 * j)
	}
	n := int64(rows) * int64(cols)
	return c.launch("split_f32_bf16", gridFor(n, 256), 256, 0, *new(args).p(in).p(out).l(int64(rows)).l(int64(cols)).
		l(int64(rowStride)).l(int64(pieceStride)).i(len(pattern)).i(int(bits)))
}

// The terms of a product of two split operands, smallest first (the order they are summed in):
// piece splitPairA[j] of A times piece splitPairB[j] of B, every pair whose pieces' numbers add
// up to at most 2. The pairs left out ((1,2), (2,1), (2,2)) are below 2⁻²⁴ of the product.
var (
	splitPairA = []int{2, 0, 1, 1, 0, 0}
	splitPairB = []int{0, 2, 1, 0, 1, 0}
	// splitOne is the order of one split operand's pieces, smallest first.
	splitOne = []int{2, 1, 0}
)

// splitAlign is the alignment in bytes of the regions of SplitGemm's scratch.
const splitAlign = 256

func alignUp(n int64) int64 { return (n + splitAlign - 1) / splitAlign * splitAlign }

// SplitGemmScratch returns the bytes of device scratch SplitGemm needs for an [m,k]·[k,n]
// product with operands of dtypes ad and bd and an output of dtype od.
func SplitGemmScratch(m, n, k int, ad, bd, od DType) (int64, error) {
	if err := checkSplitGemm(m, n, k, ad, bd, od); err != nil {
		return 0, err
	}
	mk, kn, mn := int64(m)*int64(k), int64(k)*int64(n), int64(m)*int64(n)
	switch {
	case ad == F32 && bd == F32:
		return alignUp(2*int64(len(splitPairA))*mk) + 2*int64(len(splitPairB))*kn, nil
	case ad == F32 || bd == F32:
		size := kn
		if ad == F32 {
			size = mk
		}
		return alignUp(2*3*size) + 4*3*mn, nil
	}
	return 0, nil
}

func checkSplitGemm(m, n, k int, ad, bd, od DType) error {
	for _, d := range []DType{ad, bd, od} {
		if d != F32 && d != BF16 {
			return fmt.Errorf("gomoe: SplitGemm: dtypes %v·%v → %v, want float32 or bfloat16 each", ad, bd, od)
		}
	}
	if m < 1 || n < 1 || k < 1 {
		return fmt.Errorf("gomoe: SplitGemm: m=%d n=%d k=%d, want each at least 1", m, n, k)
	}
	if int64(len(splitPairA))*int64(k) > 1<<31-1 || int64(m)*int64(k) > 1<<40 || int64(k)*int64(n) > 1<<40 {
		return fmt.Errorf("gomoe: SplitGemm: m=%d n=%d k=%d is too large", m, n, k)
	}
	return nil
}

// SplitGemm writes the row-major out [m,n] (dtype od) = op(A)·op(B), where op(A) = A [m,k] (A
// stored [k,m] when ta) of dtype ad and op(B) = B [k,n] (B [n,k] when tb) of dtype bd, each
// float32 or bfloat16, stored contiguously. It computes to float32 accuracy on bfloat16 tensor
// cores: a float32 operand is split into its three bfloat16 pieces (SplitBF16Pieces, exact),
// and cuBLAS sums the pieces' products (exact in float32) in float32 accumulators. With one
// float32 operand, one GEMM multiplies the other by its three pieces stacked along its outer
// dimension, and a small kernel adds the three float32 products, smallest first, rounding once
// to od; with two, one GEMM runs over the six significant pairs of pieces stacked along k
// (splitPairA/splitPairB), smallest first, rounded once to od. The error is that of float32 accumulation (on
// the tensor cores' adders) plus, with two float32 operands, the pairs left out (below 2⁻²⁴
// of |A|·|B|). scratch holds SplitGemmScratch bytes of device memory. Nothing waits for the
// device.
func (c *CUDA) SplitGemm(ta, tb bool, m, n, k int, a cu.DevicePtr, ad DType, b cu.DevicePtr, bd DType, out cu.DevicePtr, od DType, scratch cu.DevicePtr, scratchBytes int64) error {
	need, err := SplitGemmScratch(m, n, k, ad, bd, od)
	if err != nil {
		return err
	}
	if scratchBytes < need {
		return fmt.Errorf("gomoe: SplitGemm: %d bytes of scratch, want %d", scratchBytes, need)
	}
	if a == 0 || b == 0 || out == 0 || (need > 0 && scratch == 0) {
		return fmt.Errorf("gomoe: SplitGemm: null device pointer")
	}
	lda, ldb := k, n // row strides of A and B as stored
	if ta {
		lda = m
	}
	if tb {
		ldb = k
	}
	return c.withBLAS(func(st *blasState) error {
		switch {
		case ad == F32 && bd == F32:
			return c.splitGemm2(st, ta, tb, m, n, k, a, b, out, od, scratch)
		case ad == F32 || bd == F32:
			return c.splitGemm1(st, ta, tb, m, n, k, a, lda, ad, b, ldb, out, od, scratch)
		}
		p := rowGemm{ta: ta, tb: tb, m: m, n: n, k: k, a: a, b: b, c: out, lda: lda, ldb: ldb, ldc: n, alpha: 1}
		if err := p.check("SplitGemm"); err != nil {
			return err
		}
		return p.runAs(st, BF16, od)
	})
}

// pieceStack is how SplitGemm stacks the pieces (pattern) of a row-major [rows, cols] float32
// matrix: side by side in each row, [rows, J·cols] (alongCols), or whole pieces one after
// another, [J·rows, cols]. It also describes the stacked float32 products split_sum3 adds.
type pieceStack struct {
	rows, cols int
	alongCols  bool
	pattern    []int
}

// stackOf returns the stack of an operand stored [r, c], or [c, r] when t (transposed).
func stackOf(t bool, r, c int, alongCols bool, pattern []int) pieceStack {
	if t {
		r, c = c, r
	}
	return pieceStack{rows: r, cols: c, alongCols: alongCols, pattern: pattern}
}

// layout returns the stack as SplitBF16's rows, cols, row stride and piece stride.
func (s pieceStack) layout() (rows, cols, rowStride, pieceStride int) {
	if s.alongCols {
		return s.rows, s.cols, len(s.pattern) * s.cols, s.cols
	}
	n := s.rows * s.cols
	return 1, n, 0, n
}

// ld returns the stacked matrix's row stride.
func (s pieceStack) ld() int {
	if s.alongCols {
		return len(s.pattern) * s.cols
	}
	return s.cols
}

// stack launches the split of src into dst, stacked as s says; it must run inside c.do.
func (c *CUDA) stack(dst, src cu.DevicePtr, s pieceStack) error {
	rows, cols, rowStride, pieceStride := s.layout()
	return c.splitBF16(dst, src, rows, cols, rowStride, pieceStride, s.pattern)
}

// splitGemm2: both operands float32; the six pairs of pieces stacked along k in one GEMM: A
// [m, 6k] (A stored [k,m]: [6k, m]), B [6k, n] (B stored [n,k]: [n, 6k]).
func (c *CUDA) splitGemm2(st *blasState, ta, tb bool, m, n, k int, a, b, out cu.DevicePtr, od DType, scratch cu.DevicePtr) error {
	sa := stackOf(ta, m, k, !ta, splitPairA)
	sb := stackOf(tb, k, n, tb, splitPairB)
	as := scratch
	bs := scratch + cu.DevicePtr(alignUp(2*int64(len(splitPairA))*int64(m)*int64(k)))
	p := rowGemm{ta: ta, tb: tb, m: m, n: n, k: len(splitPairA) * k, a: as, b: bs, c: out, lda: sa.ld(), ldb: sb.ld(), ldc: n, alpha: 1}
	if err := p.check("SplitGemm"); err != nil {
		return err
	}
	if err := c.stack(as, a, sa); err != nil {
		return err
	}
	if err := c.stack(bs, b, sb); err != nil {
		return err
	}
	return p.runAs(st, BF16, od)
}

// splitGemm1: one float32 operand, its three pieces stacked (smallest first) along the
// dimension it does not share with the other operand, so that one GEMM computes the three
// products, [3m, n] (A split) or [m, 3n] (B split), in float32; split_sum3 adds them in order
// and rounds once to od.
func (c *CUDA) splitGemm1(st *blasState, ta, tb bool, m, n, k int, a cu.DevicePtr, lda int, ad DType, b cu.DevicePtr, ldb int, out cu.DevicePtr, od DType, scratch cu.DevicePtr) error {
	pieces := scratch
	p := rowGemm{ta: ta, tb: tb, m: m, n: n, k: k, a: a, b: b, lda: lda, ldb: ldb, ldc: n, alpha: 1}
	var s pieceStack // the split operand's pieces
	src, size := b, int64(k)*int64(n)
	if ad == F32 { // op(A') [3m, k]
		s = stackOf(ta, m, k, ta, splitOne)
		src, size = a, int64(m)*int64(k)
		p.a, p.m, p.lda = pieces, 3*m, s.ld()
	} else { // op(B') [k, 3n]
		s = stackOf(tb, k, n, !tb, splitOne)
		p.b, p.n, p.ldb, p.ldc = pieces, 3*n, s.ld(), 3*n
	}
	// The products are [3m, n] or [m, 3n]: the pieces of [m, n] stacked the same way.
	prods := pieceStack{rows: m, cols: n, alongCols: ad != F32, pattern: splitOne}
	p.c = scratch + cu.DevicePtr(alignUp(2*3*size))
	if err := p.check("SplitGemm"); err != nil {
		return err
	}
	if err := c.stack(pieces, src, s); err != nil {
		return err
	}
	if err := p.runAs(st, BF16, F32); err != nil {
		return err
	}
	bf16 := 0
	if od == BF16 {
		bf16 = 1
	}
	rows, cols, rowStride, pieceStride := prods.layout()
	return c.launch("split_sum3", gridFor(int64(m)*int64(n), 256), 256, 0, *new(args).p(p.c).p(out).l(int64(rows)).l(int64(cols)).
		l(int64(rowStride)).l(int64(pieceStride)).i(bf16))
}
