package kernels

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
// float64 rounding rather than bitwise.

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
				if dyp != nil {
					dst := dyp[int(r)*H : int(r)*H+len(g)]
					if probs == nil {
						copy(dst, g)
					} else {
						scaleRow(dst, g, probs[t*K+k])
					}
				}
				if dprobs != nil {
					dprobs[t*K+k] = F(dot64(yp[int(r)*H:(int(r)+1)*H], g))
				}
			}
		}
	})
	if dyp != nil {
		zeroEmptyRows(dyp, p, H)
	}
	return nil
}
