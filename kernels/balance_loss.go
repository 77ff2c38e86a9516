package kernels

import "fmt"

// The load-balancing loss of the routing on the CPU, forward and backward. Each has a CUDA
// twin of the same name on *CUDA (balance_loss_cuda.go, kernels in balance_loss.cuh) that sums
// in the same fixed order: in float64, rounded once, per chunk of LossChunk rows of one
// sequence the column sums P and the counts N, then the chunks of a sequence in order, then
// the products N·P over LossLanes lanes (element i goes to lane i mod LossLanes, in order) and
// a fixed pairwise tree over the lanes (laneSum). The products and sums are rounded one by one
// (no fused multiply-add), so the CPU and the GPU give the same bits. The gradient is rounded
// once from float64 as well.

// LossChunk is the number of rows of one partial sum of the balancing loss (a chunk never
// spans two sequences).
const LossChunk = 64

// lossChunks is the number of chunks per sequence of S rows.
func lossChunks(S int) int { return (S + LossChunk - 1) / LossChunk }

// checkBalance checks the sizes of a balancing-loss call.
func checkBalance(name string, ids int, T, K, E, B int) error {
	switch {
	case T < 1 || K < 1 || E < 1:
		return fmt.Errorf("gomoe: %s: T=%d K=%d E=%d, want all >= 1", name, T, K, E)
	case B < 1 || T%B != 0:
		return fmt.Errorf("gomoe: %s: T=%d tokens do not split into %d equal sequences", name, T, B)
	case float64(T)*float64(max(K, E)) > maxElems || float64(B)*float64(E) > maxElems: // T·K, T·E, B·E must not wrap
		return fmt.Errorf("gomoe: %s: T=%d K=%d E=%d B=%d are too large (more than 2^50 elements)", name, T, K, E, B)
	case ids != T*K:
		return fmt.Errorf("gomoe: %s: %d ids, want T·K = %d", name, ids, T*K)
	}
	return nil
}

// balanceCounts returns N [B·E]: N[b,e] is the number of pairs (t,k) of sequence b with
// ids[t,k] = e. An id outside [-1, E) is an error (-1 is not counted).
func balanceCounts(name string, ids []int32, T, K, E, B int) ([]int64, error) {
	S := T / B
	n := make([]int64, B*E)
	for i, x := range ids {
		if x < -1 || int(x) >= E {
			return nil, fmt.Errorf("gomoe: %s: ids[%d,%d] = %d is out of range [-1, %d)", name, i/K, i%K, x, E)
		}
		if x >= 0 {
			n[(i/K)/S*E+int(x)]++
		}
	}
	return n, nil
}

// BalanceLossForward returns the load-balancing loss
//
//	scale · Σ_b Σ_e N[b,e] · Σ_{t in b} s[t,e]
//
// for ids [T,K] int32 and scores s [T,E], the T tokens split into B equal, contiguous
// sequences; N[b,e] is the number of pairs (t,k) of sequence b with ids[t,k] = e (ids of -1
// are not counted; others outside [0, E) are an error). The layer's losses use
// scale = coeff·E/(B·K·S²) with S = T/B. See the file comment for the summation order.
func BalanceLossForward[F float32 | float64](ids []int32, s []F, T, K, E, B int, scale float64) (F, error) {
	const name = "BalanceLossForward"
	if err := checkBalance(name, len(ids), T, K, E, B); err != nil {
		return 0, err
	}
	if len(s) != T*E {
		return 0, fmt.Errorf("gomoe: %s: %d scores, want T·E = %d", name, len(s), T*E)
	}
	n, err := balanceCounts(name, ids, T, K, E, B)
	if err != nil {
		return 0, err
	}
	S := T / B
	cps := lossChunks(S)
	// P[b,e]: per chunk the column sums in row order, then the chunks in order.
	p := make([]float64, B*E)
	part := make([]float64, E)
	for b := 0; b < B; b++ {
		for c := 0; c < cps; c++ {
			clear(part)
			r0, r1 := b*S+c*LossChunk, min(b*S+(c+1)*LossChunk, (b+1)*S)
			for t := r0; t < r1; t++ {
				row := s[t*E : (t+1)*E]
				for e, v := range row {
					part[e] = float64(part[e] + float64(v))
				}
			}
			pb := p[b*E : (b+1)*E]
			for e, v := range part {
				pb[e] = float64(pb[e] + v)
			}
		}
	}
	total := laneSum(B*E, func(i int) float64 { return float64(float64(n[i]) * p[i]) })
	return F(float64(total * scale)), nil
}

// BalanceLossBackward writes the gradient of BalanceLossForward with respect to the scores
// into ds [T,E] (overwriting it): ds[t,e] = (scale·dy)·N[b(t),e], rounded once.
func BalanceLossBackward[F float32 | float64](ds []F, ids []int32, T, K, E, B int, scale, dy float64) error {
	const name = "BalanceLossBackward"
	if err := checkBalance(name, len(ids), T, K, E, B); err != nil {
		return err
	}
	if len(ds) != T*E {
		return fmt.Errorf("gomoe: %s: gradient of %d elements, want T·E = %d", name, len(ds), T*E)
	}
	n, err := balanceCounts(name, ids, T, K, E, B)
	if err != nil {
		return err
	}
	g := float64(scale * dy)
	S := T / B
	for t := 0; t < T; t++ {
		nb := n[t/S*E : (t/S+1)*E]
		row := ds[t*E : (t+1)*E]
		for e := range row {
			row[e] = F(float64(g * float64(nb[e])))
		}
	}
	return nil
}

// The router's balancing loss from its logits (op.RouterBalanceLoss): BalanceLoss of the
// scores over all experts, with the scores computed from the logits [T,E] inside the loss
// instead of by separate ops. score RouterSoftmax: s = the row softmax of the logits (as
// op.Softmax); RouterSigmoid: s = σ(logits), each row divided by its sum (as op.RowNormalize
// of op.Sigmoid). On the CPU these are those ops' kernels (RowForward, ActivationForward and
// their backward) followed by BalanceLossForward or BalanceLossBackward, so they give the
// chain's bits; the CUDA twins compute the scores inside the loss's own kernels with the
// device ops' arithmetic, so on the device too they give the device chain's bits. The one
// exception is a sigmoid row whose sigmoids sum below 2⁻⁶⁴ (every logit below about −44): it
// takes the row softmax of the logits, which σ(x_e)/Σ σ equals there to the type's precision,
// where the chain loses precision among subnormal numbers or divides 0 by 0 (as the fused
// router does, router.go).

// MaxRouterBalanceExperts is the largest E the device RouterBalanceLoss kernels take (the CPU
// takes any): the backward keeps the scores' gradient of one sequence, E elements, in shared
// memory.
const MaxRouterBalanceExperts = 4096

// routerAuxScores returns the scores s [T,E] of the logits, and for RouterSigmoid the sigmoids
// and which rows took the softmax instead (nil: none).
func routerAuxScores[F float32 | float64](name string, logits []F, E int, score RouterScore) (s, sg []F, soft []bool, err error) {
	s = make([]F, len(logits))
	switch score {
	case RouterSoftmax:
		err = RowForward(RowSoftmax, s, logits, E)
	case RouterSigmoid:
		sg = make([]F, len(logits))
		if err = ActivationForward(Sigmoid, sg, logits, nil); err == nil {
			err = RowForward(RowNormalize, s, sg, E)
		}
		if err != nil {
			break
		}
		soft = sigmoidSoftRows(sg, nil, E)
		for t, sf := range soft {
			if sf {
				if err = RowForward(RowSoftmax, s[t*E:(t+1)*E], logits[t*E:(t+1)*E], E); err != nil {
					break
				}
			}
		}
	default:
		err = fmt.Errorf("gomoe: %s: unknown score function %d (want RouterSoftmax or RouterSigmoid)", name, int(score))
	}
	return s, sg, soft, err
}

// RouterBalanceLossForward returns BalanceLossForward(ids, s, T, K, E, B, scale) for the scores
// s of logits [T,E] (see above).
func RouterBalanceLossForward[F float32 | float64](ids []int32, logits []F, T, K, E, B int, scale float64, score RouterScore) (F, error) {
	const name = "RouterBalanceLossForward"
	if err := checkBalance(name, len(ids), T, K, E, B); err != nil {
		return 0, err
	}
	if len(logits) != T*E {
		return 0, fmt.Errorf("gomoe: %s: %d logits, want T·E = %d", name, len(logits), T*E)
	}
	s, _, _, err := routerAuxScores(name, logits, E, score)
	if err != nil {
		return 0, err
	}
	return BalanceLossForward(ids, s, T, K, E, B, scale)
}

// RouterBalanceLossBackward writes into dlogits [T,E] (overwriting it) the gradient of
// RouterBalanceLossForward with respect to the logits: the scores' gradient of
// BalanceLossBackward taken back through the score function (RowBackward, ActivationBackward).
func RouterBalanceLossBackward[F float32 | float64](dlogits []F, ids []int32, logits []F, T, K, E, B int, scale, dy float64, score RouterScore) error {
	const name = "RouterBalanceLossBackward"
	if err := checkBalance(name, len(ids), T, K, E, B); err != nil {
		return err
	}
	if len(logits) != T*E || len(dlogits) != T*E {
		return fmt.Errorf("gomoe: %s: %d logits and a gradient of %d, want T·E = %d", name, len(logits), len(dlogits), T*E)
	}
	if err := checkInPlace(name, []span{spanOf("dlogits", dlogits)}, []span{spanOf("logits", logits)}); err != nil {
		return err
	}
	s, sg, soft, err := routerAuxScores(name, logits, E, score)
	if err != nil {
		return err
	}
	ds := make([]F, T*E)
	if err := BalanceLossBackward(ds, ids, T, K, E, B, scale, dy); err != nil {
		return err
	}
	if score == RouterSoftmax {
		return RowBackward(RowSoftmax, dlogits, logits, s, ds, E)
	}
	dsg := make([]F, T*E)
	if err := RowBackward(RowNormalize, dsg, sg, s, ds, E); err != nil {
		return err
	}
	if err := ActivationBackward(Sigmoid, 0, dlogits, logits, nil, sg, dsg); err != nil {
		return err
	}
	for t, sf := range soft { // the row softmax's gradient (1 − σ rounds to 1 there)
		if sf {
			r := dlogits[t*E : (t+1)*E]
			if err := RowBackward(RowSoftmax, r, nil, s[t*E:(t+1)*E], ds[t*E:(t+1)*E], E); err != nil {
				return err
			}
		}
	}
	return nil
}
