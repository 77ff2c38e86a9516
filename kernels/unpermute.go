package kernels

import "unsafe"

// Combine-unpermute on the CPU.
//
//	forward:  y[t]        = Σ_k probs[t,k] · yp[rowOf[t,k]]   (probs nil: unweighted sum)
//	backward: dyp[rowOf[t,k]] = probs[t,k] · dy[t]           pad and unused rows 0
//	          dprobs[t,k]     = ⟨yp[rowOf[t,k]], dy[t]⟩       0 for dropped slots
//
// Rounding contract (shared with the CUDA kernels so both give the same bits): the forward
// accumulates in the data type, starting from 0 and adding the slots in k order, each term
// rounded on its own (acc = acc + round(p·v), never a fused multiply-add). The dot products of
// dprobs accumulate in float64 (see dot64 for the fixed order) and are rounded to the data type
// once; the CUDA kernels sum them in another fixed float64 order, so dprobs agree within a
// float64 rounding rather than bitwise. bfloat16 data has its own contract, bitwise on both
// sides: UnpermuteBackwardBF16 sums dprobs in float32 in the CUDA kernel's order (DotBF16).

// UnpermuteForward writes y [T,H] from yp [R,H] and, if probs is not nil, probs [T,K].
func UnpermuteForward[F Float](y, yp, probs []F, p Plan, H int) error {
	if err := p.Check(); err != nil {
		return err
	}
	if err := checkWidth("unpermute", "H", H, max(p.T, p.Rows())); err != nil {
		return err
	}
	if err := firstErr(checkLen("unpermute: y", len(y), p.T*H), checkLen("unpermute: yp", len(yp), p.Rows()*H)); err != nil {
		return err
	}
	if probs != nil {
		if err := checkLen("unpermute: probs", len(probs), p.T*p.K); err != nil {
			return err
		}
	}
	if err := checkDisjoint("unpermute", []span{spanOf("y", y)}, append(planSpans(p), spanOf("yp", yp), spanOf("probs", probs))); err != nil {
		return err
	}
	K := p.K
	parallelRange(p.T, rowBlock, func(lo, hi int) {
		// The kept slots of a token, in k order: their rows' offsets in yp and their weights.
		offs, w := make([]int, 0, K), make([]F, 0, K)
		for t := lo; t < hi; t++ {
			offs, w = offs[:0], w[:0]
			for k, r := range p.RowOf[t*K : (t+1)*K] {
				if r < 0 {
					continue
				}
				offs = append(offs, int(r)*H)
				if probs == nil {
					w = append(w, 1) // 1·v is exact: the unweighted sum
				} else {
					w = append(w, probs[t*K+k])
				}
			}
			// y[t] = 0 + round(w₀·v₀), then + round(w_j·v_j) in k order; 0 with no kept slot.
			accRows(y[t*H:(t+1)*H], yp, offs, w)
		}
	})
	return nil
}

// UnpermuteBackward writes dyp [R,H] (if not nil) and dprobs [T,K] (if not nil) from dy [T,H].
// dyp needs probs unless the forward was unweighted (probs nil); dprobs needs yp.
func UnpermuteBackward[F Float](dyp, dprobs, dy, yp, probs []F, p Plan, H int) error {
	return unpermuteBackward(dyp, dprobs, dy, yp, probs, p, H, nil)
}

// UnpermuteBackwardBF16 is UnpermuteBackward for bfloat16 data held exactly in float32 (dy and
// yp widened from bfloat16, probs float32), the CPU twin of the CUDA kernels' bfloat16 path:
// dyp as in UnpermuteBackward (float32 products, which the caller rounds to bfloat16 once), and
// dprobs[t,k] = DotBF16(yp[rowOf[t,k]], dy[t]), summed in float32 in the GPU's order, so the
// CPU and the GPU give the same bits.
func UnpermuteBackwardBF16(dyp, dprobs, dy, yp, probs []float32, p Plan, H int) error {
	return unpermuteBackward(dyp, dprobs, dy, yp, probs, p, H, DotBF16)
}

// unpermuteBackward is UnpermuteBackward; a non-nil dot computes dprobs instead of dot64.
func unpermuteBackward[F Float](dyp, dprobs, dy, yp, probs []F, p Plan, H int, dot func(a, b []F) F) error {
	if err := p.Check(); err != nil {
		return err
	}
	if err := checkWidth("unpermute backward", "H", H, max(p.T, p.Rows())); err != nil {
		return err
	}
	if err := checkLen("unpermute backward: dy", len(dy), p.T*H); err != nil {
		return err
	}
	if dyp != nil {
		if err := checkLen("unpermute backward: dyp", len(dyp), p.Rows()*H); err != nil {
			return err
		}
	}
	if probs != nil {
		if err := checkLen("unpermute backward: probs", len(probs), p.T*p.K); err != nil {
			return err
		}
	}
	if dprobs != nil {
		if err := firstErr(checkLen("unpermute backward: dprobs", len(dprobs), p.T*p.K), checkLen("unpermute backward: yp", len(yp), p.Rows()*H)); err != nil {
			return err
		}
	}
	if err := checkDisjoint("unpermute backward", []span{spanOf("dyp", dyp), spanOf("dprobs", dprobs)},
		append(planSpans(p), spanOf("dy", dy), spanOf("yp", yp), spanOf("probs", probs))); err != nil {
		return err
	}
	K := p.K
	// One pass per routed row: the row of dyp and the dot product come from the same read of
	// dy[t] (unpermBwdRow). A large dyp is written with non-temporal stores: it cannot stay in
	// the caches anyway, and a plain store would first read each line it writes.
	flags := 0
	if dyp != nil {
		flags |= ubStore
		if probs != nil {
			flags |= ubScale
		}
		flags |= ntFlag(dyp)
	}
	if dprobs != nil && dot == nil {
		flags |= ubDot
	}
	parallelRange(p.T, rowBlock, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			g := dy[t*H : (t+1)*H]
			for k, r := range p.RowOf[t*K : (t+1)*K] {
				if r < 0 {
					if dprobs != nil {
						dprobs[t*K+k] = 0
					}
					continue
				}
				var d, a []F
				var w F
				if dyp != nil {
					d = dyp[int(r)*H : int(r)*H+H]
				}
				if probs != nil {
					w = probs[t*K+k]
				}
				if dprobs != nil {
					a = yp[int(r)*H : int(r)*H+H]
				}
				var v float64
				if flags != 0 {
					v = unpermBwdRow(d, g, a, w, flags)
				}
				switch {
				case dprobs == nil:
				case dot != nil:
					dprobs[t*K+k] = dot(a, g)
				default:
					dprobs[t*K+k] = F(v)
				}
			}
		}
	})
	if dyp != nil {
		zeroEmptyRows(dyp, p, H)
	}
	return nil
}

// The flags of unpermBwdRow (and of its vector kernels).
const (
	ubDot   = 1 // return the dot product
	ubStore = 2 // write d
	ubScale = 4 // d = w·g (else d = g)
	ubNT    = 8 // d may be written with non-temporal stores
)

// unpermNTMin is the size in bytes of a scattered output (UnpermuteBackward's dyp,
// PermuteForward's xp) from which it is written with non-temporal stores.
const unpermNTMin = 8 << 20

// ntFlag is ubNT for an output of unpermNTMin bytes or more (it cannot stay in the caches, and a
// plain store first reads each line it writes), else 0.
func ntFlag[F Float](out []F) int {
	if len(out)*int(unsafe.Sizeof(out[0])) >= unpermNTMin {
		return ubNT
	}
	return 0
}

// unpermBwdRow is one routed row of UnpermuteBackward: under ubStore it writes d = w·g
// (scaleRow, under ubScale) or d = g, and under ubDot it returns dot64(yp, g) (0 otherwise).
// d and yp, where used, are as long as g. The vector kernel (unpermBwdAsm) does the whole
// groups of 8 of long rows in one pass with the same operations, the Go code below the rest, so
// the bits do not depend on which path ran.
func unpermBwdRow[F Float](d, g, yp []F, w F, flags int) float64 {
	var l [8]float64
	i := unpermBwdAsm(&l, d, g, yp, w, flags)
	if flags&ubStore != 0 {
		if flags&ubScale != 0 {
			scaleRow(d[i:], g[i:len(d)], w)
		} else {
			copy(d[i:], g[i:])
		}
	}
	if flags&ubDot == 0 {
		return 0
	}
	if i == 0 {
		return dot64(yp, g)
	}
	return dot64Lanes(&l, yp, g, i)
}

// bf16DotPack is the number of elements of one 16-byte bfloat16 pack, the unit of DotBF16's
// order.
const bf16DotPack = 8

// BF16DotLanes is the number of partial sums of DotBF16 for rows of H elements: the packs of 8
// elements spread evenly over at most 256 partial sums, a multiple of 32 (at least 32). For H =
// 7168 (896 packs) that is 224 partial sums of 4 packs each, for H = 4096 256 of 2. It is also
// the block size of the CUDA kernel (one thread per partial sum, every thread with the same
// number of packs but the last), which is what ties the order to H alone.
func BF16DotLanes(H int) int {
	n := (H + bf16DotPack - 1) / bf16DotPack
	return rowThreads(int64(n), max((n+255)/256, 1)) // max(…) packs per partial sum
}

// rowThreads picks the block size of a CUDA kernel that moves rows of nvec packs, u packs per
// thread per step: ⌈nvec/u⌉ rounded up to a multiple of 32, between 32 and 256. (Here, not in a
// gomoecuda file, because BF16DotLanes' order depends on it.)
func rowThreads(nvec int64, u int) int {
	t := (nvec + int64(u) - 1) / int64(u)
	t = (t + 31) &^ 31
	return int(min(max(t, 32), 256))
}

// DotBF16 is the dot product ⟨a, b⟩ of bfloat16 values held in float32, summed in float32 in
// the order of the CUDA unpermute backward for bfloat16 (so both give the same bits):
//
//   - the elements go in packs of 8 (the last one padded with +0 products); the 8 products of a
//     pack are exact in float32 (8-bit significands) and add as ((p0+p1)+(p2+p3))+((p4+p5)+(p6+p7));
//   - pack q adds to partial sum q mod L, in increasing q, with L = BF16DotLanes(len(a));
//   - each group of 32 partial sums adds as a tree (s[l] += s[l+o] for o = 16, 8, 4, 2, 1: lane 0
//     of the warp's shuffle sum), and the L/32 group sums add in order to 0.
//
// The float32 sum (error about log2(len)·2^-24 of Σ|a·b| in this order) replaces float64 for
// bfloat16 data, whose values carry 8 bits; it lets the GPU kernel keep pace with its memory.
// Over the first min(len(a), len(b)) elements.
func DotBF16(a, b []float32) float32 {
	n := min(len(a), len(b))
	a, b = a[:n], b[:n]
	L := BF16DotLanes(n)
	var part [256]float32
	for q, i := 0, 0; i < n; q, i = q+1, i+bf16DotPack {
		var pr [bf16DotPack]float32
		for j := range min(bf16DotPack, n-i) {
			pr[j] = float32(a[i+j] * b[i+j])
		}
		part[q%L] += ((pr[0] + pr[1]) + (pr[2] + pr[3])) + ((pr[4] + pr[5]) + (pr[6] + pr[7]))
	}
	var s float32
	for w := 0; w < L; w += 32 {
		v := part[w : w+32]
		for o := 16; o > 0; o >>= 1 {
			for l := range o {
				v[l] += v[l+o]
			}
		}
		s += v[0]
	}
	return s
}
