package kernels

import (
	"fmt"
	"math"
)

// The fused router on the CPU: the kernels of op.RouterTopK and op.RouterProbs. The CUDA twins
// are (*CUDA).RouterTopK, RouterProbs and RouterProbsBackward (router_cuda.go, kernels in
// router.cuh), one warp per token, one launch each.
//
// A router turns a token's logits into its K experts and their combine weights:
//
//	scores = softmax(logits) or sigmoid(logits)          (over the token's E experts)
//	ids    = top-K of (selection + bias), group-limited   (selection: logits for Softmax with
//	                                                       Pre false, else the scores)
//	probs  = Scale · softmax(logits[ids])                 (Softmax, Pre false)
//	         Scale · scores[ids]                          (Softmax, Pre true)
//	         Scale · scores[ids] / Σ_k scores[ids[k]]     (Sigmoid; no division for K = 1)
//
// A sigmoid router's token whose chosen scores sum below 2⁻⁶⁴ (every chosen logit below about
// −44) takes Scale · softmax(logits[ids]) instead, which σ(x_j)/Σ_k σ(x_k) equals there to the
// precision of either float type (σ(x) = eˣ/(1 + eˣ) and 1 + eˣ rounds to 1). The chain's sum
// would lose its precision among subnormal numbers, or round to 0 and make 0/0, from about −87
// (float32) and −708 (float64) on, and its backward's division by the sum could overflow.
// Below, "the chain's bits" holds for every other token.
//
// Each function here computes what the chain of single ops computes (Softmax or Sigmoid,
// TopK, GatherTopK, Softmax or RowNormalize, Scale), with the same kernels in the same order,
// so the fused ops give that chain's bits on the CPU; the CUDA twins repeat the device
// kernels' arithmetic the same way (one warp per row, the same lane order), so on the device
// too the fused ops give the chain's bits. Between CPU and device the results agree as the
// single ops do: ids equal unless two selection scores are within a few ulps, probs within a
// few ulps (the transcendental functions differ).

// RouterScore is the score function of a router.
type RouterScore int

const (
	// RouterSoftmax scores the experts with a softmax over the token's logits.
	RouterSoftmax RouterScore = 1
	// RouterSigmoid scores each expert with σ(logit) (DeepSeek-V3).
	RouterSigmoid RouterScore = 2
)

// String names the score function.
func (s RouterScore) String() string {
	switch s {
	case RouterSoftmax:
		return "softmax"
	case RouterSigmoid:
		return "sigmoid"
	}
	return fmt.Sprintf("RouterScore(%d)", int(s))
}

// Router is the configuration of a fused router (see the file comment for the math).
type Router struct {
	// Score is the score function.
	Score RouterScore
	// Pre, with Softmax, selects on the softmax over all experts and gathers the chosen
	// experts' values as probs (pre-softmax, Mixtral-style top-k of the full softmax); false
	// selects on the logits and takes the softmax over the chosen K (post-softmax). Ignored
	// for Sigmoid.
	Pre bool
	// Groups and Kept are the group-limited selection of TopK (1 and 1: no groups).
	Groups, Kept int
	// Scale multiplies the probs (the routed scaling factor; 1: none).
	Scale float64
}

// Check reports whether r is a valid router for E experts and K per token.
func (r Router) Check(E, K int) error {
	const name = "gomoe: router"
	switch {
	case r.Score != RouterSoftmax && r.Score != RouterSigmoid:
		return fmt.Errorf("%s: unknown score function %d (set Score to RouterSoftmax or RouterSigmoid)", name, int(r.Score))
	case math.IsNaN(r.Scale) || math.IsInf(r.Scale, 0):
		return fmt.Errorf("%s: scale %v is not finite", name, r.Scale)
	}
	return CheckTopK(E, K, r.Groups, r.Kept)
}

// String describes r.
func (r Router) String() string {
	return fmt.Sprintf("router{%v pre=%v groups=%d kept=%d scale=%v}", r.Score, r.Pre, r.Groups, r.Kept, r.Scale)
}

// preFlag is Pre as the device kernels take it (1 or 0).
func (r Router) preFlag() int {
	if r.Pre {
		return 1
	}
	return 0
}

// selectsOnLogits reports whether the top-k selection reads the logits themselves.
func (r Router) selectsOnLogits() bool { return r.Score == RouterSoftmax && !r.Pre }

// routerArgs checks a router call on data of type F: r (its scale must also fit F, as the device
// router requires) and the sizes, logits [T,E], a T·K slice and bias [E] or nil.
func routerArgs[F float32 | float64](name string, r Router, nLogits, nTK, nBias, E, K int) (T int, err error) {
	if err := r.Check(E, K); err != nil {
		return 0, err
	}
	if err := scaleFits[F](name, r.Scale); err != nil {
		return 0, err
	}
	T = nTK / K
	if err := checkWidth(name, "E", E, T); err != nil { // T·E must not wrap
		return 0, err
	}
	if nTK != T*K || nLogits != T*E {
		return 0, fmt.Errorf("gomoe: %s: %d logits and %d ids or probs, want T·E and T·K for E=%d K=%d", name, nLogits, nTK, E, K)
	}
	if nBias != 0 && nBias != E {
		return 0, fmt.Errorf("gomoe: %s: bias has %d elements, want E=%d", name, nBias, E)
	}
	return T, nil
}

// routerScores returns the scores [T,E] of logits (softmax or sigmoid, as op.Softmax and
// op.Sigmoid compute them).
func routerScores[F float32 | float64](r Router, logits []F, E int) ([]F, error) {
	s := make([]F, len(logits))
	if r.Score == RouterSoftmax {
		return s, RowForward(RowSoftmax, s, logits, E)
	}
	return s, ActivationForward(Sigmoid, s, logits, nil)
}

// RouterTopK writes ids [T,K] for logits [T,E] (T = len(ids)/K): every token's K experts with
// the highest selection score plus bias [E] (nil for none), with TopK's rules for groups, ties
// and order. A NaN selection score is an error, as in TopK.
func RouterTopK[F float32 | float64](ids []int32, logits, bias []F, E, K int, r Router) error {
	if _, err := routerArgs[F]("RouterTopK", r, len(logits), len(ids), len(bias), E, K); err != nil {
		return err
	}
	sel := logits
	if !r.selectsOnLogits() {
		var err error
		if sel, err = routerScores(r, logits, E); err != nil {
			return err
		}
	}
	return TopK(ids, widen64(sel), widen64(bias), E, K, r.Groups, r.Kept)
}

// scaleFits reports an error when the router's scale is infinite in F (float32 overflows
// beyond 3.4·10³⁸: the probs would be ±Inf and NaN) or a scale other than 0 rounds to 0 in F
// (float32 below 1.4·10⁻⁴⁵: every prob would be 0, and the router's gradient too).
func scaleFits[F float32 | float64](name string, scale float64) error {
	if math.IsInf(float64(F(scale)), 0) && !math.IsInf(scale, 0) {
		return fmt.Errorf("gomoe: %s: scale %v overflows %T", name, scale, F(0))
	}
	if F(scale) == 0 && scale != 0 {
		return fmt.Errorf("gomoe: %s: scale %v rounds to 0 in %T", name, scale, F(0))
	}
	return nil
}

// widen64 returns v as float64 values (exact): v itself when it already is float64, nil for nil.
func widen64[F float32 | float64](v []F) []float64 {
	if d, ok := any(v).([]float64); ok || v == nil {
		return d
	}
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}

// RouterProbs writes probs [T,K] for logits [T,E] and the chosen ids [T,K] (an id of -1 has the
// chosen value 0 before any normalisation, as GatherTopK gives it: prob 0, but for a post-softmax
// router a logit 0 in the softmax over the K chosen, see op.RouterProbs; one outside [-1, E) is
// an error).
func RouterProbs[F float32 | float64](probs, logits []F, ids []int32, E, K int, r Router) error {
	T, err := routerArgs[F]("RouterProbs", r, len(logits), len(ids), 0, E, K)
	if err != nil {
		return err
	}
	if len(probs) != T*K {
		return fmt.Errorf("gomoe: RouterProbs: %d probs, want T·K = %d", len(probs), T*K)
	}
	// Not in place either (probs = logits, K = E): a sigmoid router's token with tiny scores
	// reads its logits after the probs are written.
	if err := checkDisjoint("RouterProbs", []span{spanOf("probs", probs)}, []span{spanOf("logits", logits), spanOf("ids", ids)}); err != nil {
		return err
	}
	return routerProbsOf(r, probs, logits, ids, E, K)
}

// routerChosen writes c [T,K] with the values the probs are made of: the chosen logits
// (softmax, Pre false) or the chosen scores. It returns the scores [T,E] (nil for softmax with
// Pre false).
func routerChosen[F float32 | float64](r Router, c, logits []F, ids []int32, E, K int) ([]F, error) {
	if r.selectsOnLogits() {
		return nil, GatherTopK(c, logits, ids, E, K)
	}
	s, err := routerScores(r, logits, E)
	if err != nil {
		return nil, err
	}
	return s, GatherTopK(c, s, ids, E, K)
}

// routerProbsOf is RouterProbs after the checks: probs = scale · norm(chosen).
func routerProbsOf[F float32 | float64](r Router, probs, logits []F, ids []int32, E, K int) error {
	var op RowOp
	switch {
	case r.Score == RouterSoftmax && !r.Pre:
		op = RowSoftmax
	case r.Score == RouterSigmoid && K > 1:
		op = RowNormalize
	}
	c := probs // with nothing to normalise, the chosen values are the probs
	if op != 0 {
		c = make([]F, len(probs))
	}
	if _, err := routerChosen(r, c, logits, ids, E, K); err != nil {
		return err
	}
	if op != 0 {
		if err := RowForward(op, probs, c, K); err != nil {
			return err
		}
	}
	if op == RowNormalize {
		for t, soft := range sigmoidSoftRows(c, ids, K) {
			if soft {
				if err := routerSoftProbs(probs[t*K:(t+1)*K], logits[t*E:(t+1)*E], ids[t*K:(t+1)*K]); err != nil {
					return err
				}
			}
		}
	}
	if r.Scale != 1 {
		f := F(r.Scale)
		for i, p := range probs {
			probs[i] = p * f
		}
	}
	return nil
}

// RouterProbsBackward writes dlogits [T,E], the gradient of RouterProbs's probs with respect to
// the logits, from dprobs [T,K] (the chain's backward: scale, the softmax or normalisation
// over the chosen, the scatter, the score function).
func RouterProbsBackward[F float32 | float64](dlogits, logits []F, ids []int32, dprobs []F, E, K int, r Router) error {
	T, err := routerArgs[F]("RouterProbsBackward", r, len(logits), len(ids), 0, E, K)
	if err != nil {
		return err
	}
	if len(dprobs) != T*K || len(dlogits) != T*E {
		return fmt.Errorf("gomoe: RouterProbsBackward: %d dprobs and %d dlogits, want T·K = %d and T·E = %d", len(dprobs), len(dlogits), T*K, T*E)
	}
	// Not in place either: a sigmoid router's token with tiny scores reads its logits and
	// dprobs after dlogits is written.
	if err := checkDisjoint("RouterProbsBackward", []span{spanOf("dlogits", dlogits)},
		[]span{spanOf("logits", logits), spanOf("ids", ids), spanOf("dprobs", dprobs)}); err != nil {
		return err
	}
	c := make([]F, T*K)
	scores, err := routerChosen(r, c, logits, ids, E, K)
	if err != nil {
		return err
	}
	g := dprobs // read only
	if r.Scale != 1 {
		g = make([]F, T*K)
		f := F(r.Scale)
		for i, v := range dprobs {
			g[i] = v * f
		}
	}
	dc := g // the gradient of the chosen values
	switch {
	case r.Score == RouterSoftmax && !r.Pre:
		p := make([]F, T*K)
		if err := RowForward(RowSoftmax, p, c, K); err != nil {
			return err
		}
		dc = make([]F, T*K)
		if err := RowBackward(RowSoftmax, dc, nil, p, g, K); err != nil {
			return err
		}
	case r.Score == RouterSigmoid && K > 1:
		y := make([]F, T*K)
		if err := RowForward(RowNormalize, y, c, K); err != nil {
			return err
		}
		dc = make([]F, T*K)
		if err := RowBackward(RowNormalize, dc, c, y, g, K); err != nil {
			return err
		}
	}
	if scores == nil { // softmax over the chosen: the scatter is the logits' gradient
		clear(dlogits)
		return GatherTopKBackward(dlogits, dc, ids, E, K)
	}
	ds := make([]F, T*E)
	if err := GatherTopKBackward(ds, dc, ids, E, K); err != nil {
		return err
	}
	if r.Score == RouterSoftmax {
		return RowBackward(RowSoftmax, dlogits, nil, scores, ds, E)
	}
	if err := ActivationBackward(Sigmoid, 0, dlogits, logits, nil, scores, ds); err != nil || K == 1 {
		return err
	}
	// Tokens whose chosen scores sum below 2⁻⁶⁴ took the softmax of their chosen logits: their
	// gradient is that softmax's (1 − σ(x) rounds to 1 there).
	soft := sigmoidSoftRows(c, ids, K)
	if soft == nil {
		return nil
	}
	p, dp := make([]F, K), make([]F, K)
	for t, sf := range soft {
		if !sf {
			continue
		}
		row, idr := dlogits[t*E:(t+1)*E], ids[t*K:(t+1)*K]
		if err := routerSoftProbs(p, logits[t*E:(t+1)*E], idr); err != nil {
			return err
		}
		if err := RowBackward(RowSoftmax, dp, nil, p, g[t*K:(t+1)*K], K); err != nil {
			return err
		}
		clear(row)
		if err := GatherTopKBackward(row, dp, idr, E, K); err != nil {
			return err
		}
	}
	return nil
}

// sigmoidSumTiny is the sum of a token's sigmoid scores below which a sigmoid router
// normalises with the softmax of the logits (see the file comment).
const sigmoidSumTiny = 0x1p-64

// sigmoidSoftRows reports, for each row of the [rows, n] scores c, whether the row sums below
// sigmoidSumTiny and has a score to normalise (an id other than −1; ids nil: every column
// counts). It returns nil when no row does.
func sigmoidSoftRows[F float32 | float64](c []F, ids []int32, n int) []bool {
	var soft []bool
	for r := 0; r*n < len(c); r++ {
		s, has := 0.0, ids == nil
		for j, v := range c[r*n : (r+1)*n] {
			s += float64(v)
			has = has || ids[r*n+j] >= 0
		}
		if s < sigmoidSumTiny && has {
			if soft == nil {
				soft = make([]bool, len(c)/n)
			}
			soft[r] = true
		}
	}
	return soft
}

// routerSoftProbs writes p [K], the softmax of one token's chosen logits x[ids] (an id of −1
// gets 0).
func routerSoftProbs[F float32 | float64](p, x []F, ids []int32) error {
	c := make([]F, len(ids))
	for j, e := range ids {
		c[j] = F(math.Inf(-1))
		if e >= 0 {
			c[j] = x[e]
		}
	}
	return RowForward(RowSoftmax, p, c, len(ids))
}
