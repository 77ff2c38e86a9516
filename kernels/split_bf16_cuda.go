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

// splitAlign is the alignment in bytes of the pieces SplitGemm keeps in its scratch.
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

// splitGemm2: both operands float32; the six pairs of pieces stacked along k in one GEMM. A
// stacked along its columns is [m, 6k] (pieces side by side in each row) or, stored [k,m],
// [6k, m] (whole pieces one after another); B likewise.
func (c *CUDA) splitGemm2(st *blasState, ta, tb bool, m, n, k int, a, b, out cu.DevicePtr, od DType, scratch cu.DevicePtr) error {
	J := len(splitPairA)
	as := scratch
	bs := scratch + cu.DevicePtr(alignUp(2*int64(J)*int64(m)*int64(k)))
	p := rowGemm{ta: ta, tb: tb, m: m, n: n, k: J * k, a: as, b: bs, c: out, lda: J * k, ldb: n, ldc: n, alpha: 1}
	if ta {
		p.lda = m
	}
	if tb {
		p.ldb = J * k
	}
	if err := p.check("SplitGemm"); err != nil {
		return err
	}
	var err error
	if ta { // A [k,m]: whole pieces one after another, [6k, m]
		err = c.splitBF16(as, a, 1, k*m, 0, k*m, splitPairA)
	} else { // A [m,k]: [m, 6k]
		err = c.splitBF16(as, a, m, k, J*k, k, splitPairA)
	}
	if err != nil {
		return err
	}
	if tb { // B [n,k]: [n, 6k]
		err = c.splitBF16(bs, b, n, k, J*k, k, splitPairB)
	} else { // B [k,n]: [6k, n]
		err = c.splitBF16(bs, b, 1, k*n, 0, k*n, splitPairB)
	}
	if err != nil {
		return err
	}
	return p.runAs(st, BF16, od)
}

// splitGemm1: one float32 operand, its three pieces stacked (smallest first) along the
// dimension it does not share with the other operand, so that one GEMM computes the three
// products, [m, 3n] (B split) or [3m, n] (A split), in float32; split_sum3 adds them in order
// and rounds once to od.
func (c *CUDA) splitGemm1(st *blasState, ta, tb bool, m, n, k int, a cu.DevicePtr, lda int, ad DType, b cu.DevicePtr, ldb int, out cu.DevicePtr, od DType, scratch cu.DevicePtr) error {
	pieces := scratch
	p := rowGemm{ta: ta, tb: tb, m: m, n: n, k: k, a: a, b: b, lda: lda, ldb: ldb, ldc: n, alpha: 1}
	// split: the launch that stacks the pieces; sum: where the products lie in prod.
	var split func() error
	var sumRows, sumCols, sumRowStride, sumPieceStride int
	if ad == F32 { // A's pieces along M: op(A') is [3m, k]; the products are [3m, n]
		p.a, p.m = pieces, 3*m
		sumRows, sumCols, sumRowStride, sumPieceStride = 1, m*n, 0, m*n
		if ta { // A [k,m]: A' [k, 3m]
			p.lda = 3 * m
			split = func() error { return c.splitBF16(pieces, a, k, m, 3*m, m, splitOne) }
		} else { // A [m,k]: A' [3m, k], whole pieces one after another
			split = func() error { return c.splitBF16(pieces, a, 1, m*k, 0, m*k, splitOne) }
		}
	} else { // B's pieces along N: op(B') is [k, 3n]; the products are [m, 3n]
		p.b, p.n, p.ldc = pieces, 3*n, 3*n
		sumRows, sumCols, sumRowStride, sumPieceStride = m, n, 3*n, n
		if tb { // B [n,k]: B' [3n, k], whole pieces one after another
			split = func() error { return c.splitBF16(pieces, b, 1, n*k, 0, n*k, splitOne) }
		} else { // B [k,n]: B' [k, 3n]
			p.ldb = 3 * n
			split = func() error { return c.splitBF16(pieces, b, k, n, 3*n, n, splitOne) }
		}
	}
	size := int64(m) * int64(k)
	if ad != F32 {
		size = int64(k) * int64(n)
	}
	prod := scratch + cu.DevicePtr(alignUp(2*3*size))
	p.c = prod
	if err := p.check("SplitGemm"); err != nil {
		return err
	}
	if err := split(); err != nil {
		return err
	}
	if err := p.runAs(st, BF16, F32); err != nil {
		return err
	}
	bf16 := 0
	if od == BF16 {
		bf16 = 1
	}
	nn := int64(m) * int64(n)
	return c.launch("split_sum3", gridFor(nn, 256), 256, 0, *new(args).p(prod).p(out).l(int64(sumRows)).l(int64(sumCols)).
		l(int64(sumRowStride)).l(int64(sumPieceStride)).i(bf16))
}
