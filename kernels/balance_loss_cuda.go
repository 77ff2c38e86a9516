//go:build gomoecuda

package kernels

import (
	"fmt"
	"math"

	"gorgonia.org/cu"
)

// CUDA twins of balance_loss.go (kernels in balance_loss.cuh). Like the other launchers they
// enqueue on the default stream and never wait; the caller provides the scratch memory (work) of
// the size BalanceLossWorkBytes gives, which may be reused as soon as later work on the same stream
// is enqueued.

func init() {
	kernelNames = append(kernelNames, "loss_counts_sum")
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "loss_partials_"+s, "balance_loss_fwd_"+s, "balance_loss_bwd_"+s,
			"loss_partials_logits_"+s, "balance_loss_bwd_logits_"+s)
	}
}

// balanceGrid is the launch shape of the per-chunk kernels: chunks·ny blocks of bd threads.
type balanceGrid struct{ chunks, cps, ny, bd, S int }

func balanceShape(name string, d DType, T, K, E, B int) (balanceGrid, error) {
	if d != F32 && d != F64 {
		return balanceGrid{}, fmt.Errorf("gomoe: device %s: dtype %v, want float32 or float64", name, d)
	}
	if err := checkBalance("device "+name, T*K, T, K, E, B); err != nil {
		return balanceGrid{}, err
	}
	if int64(T)*int64(K) > math.MaxInt32 || int64(T)*int64(E) > math.MaxInt64/8 {
		return balanceGrid{}, fmt.Errorf("gomoe: device %s: T=%d K=%d E=%d is too large", name, T, K, E)
	}
	S := T / B
	bd := min(256, (E+31)&^31)
	gr := balanceGrid{cps: lossChunks(S), bd: bd, ny: (E + bd - 1) / bd, S: S}
	gr.chunks = B * gr.cps
	if int64(gr.chunks)*int64(gr.ny) > math.MaxInt32 {
		return balanceGrid{}, fmt.Errorf("gomoe: device %s: T=%d E=%d needs too many blocks", name, T, E)
	}
	return gr, nil
}

// BalanceLossWorkBytes is the scratch size of BalanceLossForward and BalanceLossBackward: a
// float64 and an int32 partial per chunk of LossChunk rows and expert.
func BalanceLossWorkBytes(T, E, B int) int64 {
	if B < 1 || T < 1 || E < 1 {
		return 0
	}
	n := int64(B) * int64(lossChunks(T/B)) * int64(E)
	return 12 * n
}

// BalanceLossForward writes into out (one element of dtype d) the CPU BalanceLossForward of
// ids [T,K] int32 and scores [T,E], bit for bit. Ids outside [-1, E) set StatusBadID and are
// not counted.
func (c *CUDA) BalanceLossForward(d DType, out, ids, scores, work cu.DevicePtr, T, K, E, B int, scale float64) error {
	gr, err := balanceShape("BalanceLossForward", d, T, K, E, B)
	if err != nil {
		return err
	}
	partP := work
	partN := work + cu.DevicePtr(8*int64(gr.chunks)*int64(E))
	return c.do(func() error {
		if err := c.launch("loss_partials_"+d.suffix(), gr.chunks*gr.ny, gr.bd, 0,
			*new(args).p(ids).p(scores).p(partP).p(partN).i(K).i(E).i(gr.S).i(gr.cps).i(gr.ny).p(c.status)); err != nil {
			return err
		}
		return c.launch("balance_loss_fwd_"+d.suffix(), 1, LossLanes, 0,
			*new(args).p(partP).p(partN).p(out).i(B).i(E).i(gr.cps).d(scale))
	})
}

// lossCounts enqueues what the backward passes count again: loss_partials without scores
// (each chunk's counts into partN), then loss_counts_sum (each sequence's counts N [B·E] int32
// into the scores' partials, which the backward does not use), and returns N's address. It
// runs inside c.do.
func (c *CUDA) lossCounts(d DType, gr balanceGrid, ids, work cu.DevicePtr, K, E, B int) (cu.DevicePtr, error) {
	partN := work + cu.DevicePtr(8*int64(gr.chunks)*int64(E))
	if err := c.launch("loss_partials_"+d.suffix(), gr.chunks*gr.ny, gr.bd, 0,
		*new(args).p(ids).p(0).p(0).p(partN).i(K).i(E).i(gr.S).i(gr.cps).i(gr.ny).p(c.status)); err != nil {
		return 0, err
	}
	N := work // B·E int32 fit in the chunks·E float64 partials: B <= chunks
	warps := int64(B) * int64(E)
	return N, c.launch("loss_counts_sum", int((warps*32+255)/256), 256, 0, *new(args).p(partN).p(N).i(B).i(E).i(gr.cps))
}

// BalanceLossBackward writes ds [T,E] = the CPU BalanceLossBackward, bit for bit. dy is a
// one-element device tensor of dtype d holding the output gradient, or 0 to use dyv.
func (c *CUDA) BalanceLossBackward(d DType, ds, ids, work, dy cu.DevicePtr, T, K, E, B int, scale, dyv float64) error {
	gr, err := balanceShape("BalanceLossBackward", d, T, K, E, B)
	if err != nil {
		return err
	}
	return c.do(func() error {
		N, err := c.lossCounts(d, gr, ids, work, K, E, B)
		if err != nil {
			return err
		}
		return c.launch("balance_loss_bwd_"+d.suffix(), gr.chunks*gr.ny, gr.bd, 0,
			*new(args).p(N).p(ds).p(dy).d(dyv).i(E).i(gr.S).i(gr.cps).i(gr.ny).d(scale))
	})
}

// routerBalanceSplit is the number of blocks of balance_loss_bwd_logits per chunk of LossChunk
// rows (each of LossChunk/routerBalanceSplit warps takes one row).
const routerBalanceSplit = 8

// routerBalanceShape checks a RouterBalanceLoss call and returns its launch shape (one block
// of 256 threads per chunk).
func routerBalanceShape(name string, d DType, T, K, E, B int, score RouterScore) (balanceGrid, error) {
	gr, err := balanceShape(name, d, T, K, E, B)
	if err != nil {
		return gr, err
	}
	if score != RouterSoftmax && score != RouterSigmoid {
		return gr, fmt.Errorf("gomoe: device %s: unknown score function %d (want RouterSoftmax or RouterSigmoid)", name, int(score))
	}
	if E > MaxRouterBalanceExperts {
		return gr, fmt.Errorf("gomoe: device %s: E=%d experts, at most %d", name, E, MaxRouterBalanceExperts)
	}
	return gr, nil
}

// RouterBalanceLossForward writes into out (one element of dtype d) the loss of the CPU
// RouterBalanceLossForward of ids [T,K] and logits [T,E]; the device op chain's bits (scores by
// the row-op and activation kernels' arithmetic, then BalanceLossForward), within a few ulps of
// the CPU (the exponentials differ). Two launches; work as for BalanceLossForward.
func (c *CUDA) RouterBalanceLossForward(d DType, out, ids, logits, work cu.DevicePtr, T, K, E, B int, scale float64, score RouterScore) error {
	gr, err := routerBalanceShape("RouterBalanceLossForward", d, T, K, E, B, score)
	if err != nil {
		return err
	}
	partP := work
	partN := work + cu.DevicePtr(8*int64(gr.chunks)*int64(E))
	return c.do(func() error {
		if err := c.launch("loss_partials_logits_"+d.suffix(), gr.chunks, 256, 0,
			*new(args).p(ids).p(logits).p(partP).p(partN).i(K).i(E).i(gr.S).i(gr.cps).i(int(score)).p(c.status)); err != nil {
			return err
		}
		return c.launch("balance_loss_fwd_"+d.suffix(), 1, LossLanes, 0,
			*new(args).p(partP).p(partN).p(out).i(B).i(E).i(gr.cps).d(scale))
	})
}

// RouterBalanceLossBackward writes dlogits [T,E], the gradient of RouterBalanceLossForward with
// respect to the logits (dy as in BalanceLossBackward): the device chain's bits. Three launches:
// the counts per chunk, per sequence (lossCounts), the gradient.
func (c *CUDA) RouterBalanceLossBackward(d DType, dlogits, ids, logits, work, dy cu.DevicePtr, T, K, E, B int, scale, dyv float64, score RouterScore) error {
	gr, err := routerBalanceShape("RouterBalanceLossBackward", d, T, K, E, B, score)
	if err != nil {
		return err
	}
	return c.do(func() error {
		N, err := c.lossCounts(d, gr, ids, work, K, E, B)
		if err != nil {
			return err
		}
		// routerBalanceSplit blocks per chunk of LossChunk rows, one row per warp.
		return c.launch("balance_loss_bwd_logits_"+d.suffix(), gr.chunks*routerBalanceSplit, 32*LossChunk/routerBalanceSplit, E*d.Size(),
			*new(args).p(N).p(logits).p(dlogits).p(dy).d(dyv).i(E).i(gr.S).i(gr.cps).i(routerBalanceSplit).d(scale).i(int(score)))
	})
}
