package kernels

import "fmt"

// Permute-dispatch on the CPU.
//
//	forward:  xp[rowOf[t,k]] = x[t]               pad and unused rows of xp are 0
//	          pp[rowOf[t,k]] = probs[t,k]         (optional permuted probs)
//	backward: dx[t]       = Σ_k dxp[rowOf[t,k]]   in k order, dropped slots skipped
//	          dprobs[t,k] = dpp[rowOf[t,k]]       0 for dropped slots
//
// Rounding contract (shared with the CUDA kernels): the backward sum starts at +0 and adds the
// slots in k order in the data type, so a token whose only gradient is -0 gets +0.

// rowBlock is the least number of tokens (or rows) a goroutine takes; below it the kernels
// run on the calling goroutine.
const rowBlock = 64

func checkLen(what string, got, want int) error {
	if got != want {
		return fmt.Errorf("gomoe: %s has %d elements, want %d", what, got, want)
	}
	return nil
}

// PermuteForward writes xp [R,H] from x [T,H]: every token's row is copied to its K
// destination rows, and every row that holds no token is zeroed.
func PermuteForward[F Float](xp, x []F, p Plan, H int) error {
	if err := p.Check(); err != nil {
		return err
	}
	if err := checkWidth("permute", "H", H, max(p.T, p.Rows())); err != nil {
		return err
	}
	if err := firstErr(checkLen("permute: x", len(x), p.T*H), checkLen("permute: xp", len(xp), p.Rows()*H)); err != nil {
		return err
	}
	if err := checkDisjoint("permute", []span{spanOf("xp", xp)}, append(planSpans(p), spanOf("x", x))); err != nil {
		return err
	}
	K := p.K
	flags := ubStore | ntFlag(xp) // a large xp with non-temporal stores, as UnpermuteBackward's dyp
	parallelRange(p.T, rowBlock, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			src := x[t*H : (t+1)*H]
			for _, r := range p.RowOf[t*K : (t+1)*K] {
				if r >= 0 {
					unpermBwdRow(xp[int(r)*H:(int(r)+1)*H], src, nil, 0, flags) // a copy
				}
			}
		}
	})
	zeroEmptyRows(xp, p, H)
	return nil
}

// zeroEmptyRows clears every row r of buf [R,H] with tokenOf[r] < 0.
func zeroEmptyRows[F Float](buf []F, p Plan, H int) {
	parallelRange(len(p.TokenOf), rowBlock, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			if p.TokenOf[r] < 0 {
				clear(buf[r*H : (r+1)*H])
			}
		}
	})
}

// PermuteProbsForward writes pp [R] from probs [T,K]: pp[rowOf[t,k]] = probs[t,k], 0 elsewhere.
func PermuteProbsForward[F Float](pp, probs []F, p Plan) error {
	if err := p.Check(); err != nil {
		return err
	}
	if err := firstErr(checkLen("permute probs: probs", len(probs), p.T*p.K), checkLen("permute probs: pp", len(pp), p.Rows())); err != nil {
		return err
	}
	if err := checkDisjoint("permute probs", []span{spanOf("pp", pp)}, append(planSpans(p), spanOf("probs", probs))); err != nil {
		return err
	}
	clear(pp)
	for i, r := range p.RowOf {
		if r >= 0 {
			pp[r] = probs[i]
		}
	}
	return nil
}

// PermuteBackward writes dx [T,H] from dxp [R,H]: dx[t] = Σ_k dxp[rowOf[t,k]], summed in k order
// in the data type (float32 data accumulates in float32), so the result is bitwise reproducible.
func PermuteBackward[F Float](dx, dxp []F, p Plan, H int) error {
	if err := p.Check(); err != nil {
		return err
	}
	if err := checkWidth("permute backward", "H", H, max(p.T, p.Rows())); err != nil {
		return err
	}
	if err := firstErr(checkLen("permute backward: dx", len(dx), p.T*H), checkLen("permute backward: dxp", len(dxp), p.Rows()*H)); err != nil {
		return err
	}
	if err := checkDisjoint("permute backward", []span{spanOf("dx", dx)}, append(planSpans(p), spanOf("dxp", dxp))); err != nil {
		return err
	}
	K := p.K
	parallelRange(p.T, rowBlock, func(lo, hi int) {
		offs, ones := make([]int, 0, K), make([]F, K)
		for k := range ones {
			ones[k] = 1 // 1·v is exact: accRows adds the rows themselves
		}
		for t := lo; t < hi; t++ {
			offs = offs[:0]
			for _, r := range p.RowOf[t*K : (t+1)*K] {
				if r >= 0 {
					offs = append(offs, int(r)*H)
				}
			}
			// acc = 0 + v₀ (0 + v, not v, so −0 becomes +0 as on the GPU), then + v_k in k
			// order; 0 with no kept slot.
			accRows(dx[t*H:(t+1)*H], dxp, offs, ones)
		}
	})
	return nil
}

// PermuteProbsBackward writes dprobs [T,K] from dpp [R]: dprobs[t,k] = dpp[rowOf[t,k]], 0 for
// dropped slots.
func PermuteProbsBackward[F Float](dprobs, dpp []F, p Plan) error {
	if err := p.Check(); err != nil {
		return err
	}
	if err := firstErr(checkLen("permute probs backward: dprobs", len(dprobs), p.T*p.K), checkLen("permute probs backward: dpp", len(dpp), p.Rows())); err != nil {
		return err
	}
	if err := checkDisjoint("permute probs backward", []span{spanOf("dprobs", dprobs)}, append(planSpans(p), spanOf("dpp", dpp))); err != nil {
		return err
	}
	for i, r := range p.RowOf {
		if r >= 0 {
			dprobs[i] = dpp[r]
		} else {
			dprobs[i] = 0
		}
	}
	return nil
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
