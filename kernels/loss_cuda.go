//go:build gomoecuda

package kernels

import (
	"fmt"
	"math"

	"gorgonia.org/cu"
)

// CUDA twins of loss.go (kernels in loss.cuh). Like the other launchers they enqueue on the
// default stream and never wait; the caller provides the scratch memory (work) of the size
// BalanceLossWorkBytes or ZLossWorkBytes gives, which may be reused as soon as later work on
// the same stream is enqueued.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "loss_partials_"+s, "balance_loss_fwd_"+s, "balance_loss_bwd_"+s,
			"zloss_rows_"+s, "zloss_bwd_"+s, "loss_sum_"+s)
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

// BalanceLossBackward writes ds [T,E] = the CPU BalanceLossBackward, bit for bit. dy is a
// one-element device tensor of dtype d holding the output gradient, or 0 to use dyv.
func (c *CUDA) BalanceLossBackward(d DType, ds, ids, work, dy cu.DevicePtr, T, K, E, B int, scale, dyv float64) error {
	gr, err := balanceShape("BalanceLossBackward", d, T, K, E, B)
	if err != nil {
		return err
	}
	partN := work + cu.DevicePtr(8*int64(gr.chunks)*int64(E))
	return c.do(func() error {
		if err := c.launch("loss_partials_"+d.suffix(), gr.chunks*gr.ny, gr.bd, 0,
			*new(args).p(ids).p(0).p(0).p(partN).i(K).i(E).i(gr.S).i(gr.cps).i(gr.ny).p(c.status)); err != nil {
			return err
		}
		return c.launch("balance_loss_bwd_"+d.suffix(), gr.chunks*gr.ny, gr.bd, 0,
			*new(args).p(partN).p(ds).p(dy).d(dyv).i(E).i(gr.S).i(gr.cps).i(gr.ny).d(scale))
	})
}

// ZLossWorkBytes is the scratch size of ZLossForward: one float64 per row.
func ZLossWorkBytes(T int) int64 { return 8 * int64(max(T, 0)) }

func zShape(name string, d DType, T, E int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %s: dtype %v, want float32 or float64", name, d)
	}
	if T < 1 || E < 1 || E > math.MaxInt32 || int64(T) > math.MaxInt64/int64(E)/8 {
		return fmt.Errorf("gomoe: device %s: T=%d E=%d, want both >= 1", name, T, E)
	}
	return nil
}

// ZLossForward writes into out (one element of dtype d) the z-loss of logits x [T,E] as the
// CPU ZLossForward computes it (within a few float64 ulps before the final rounding: CUDA's
// exp and log).
func (c *CUDA) ZLossForward(d DType, out, x, work cu.DevicePtr, T, E int, scale float64) error {
	if err := zShape("ZLossForward", d, T, E); err != nil {
		return err
	}
	rows := int64(T)
	return c.do(func() error {
		if err := c.launch("zloss_rows_"+d.suffix(), gridFor(rows*32, 256), 256, 0,
			*new(args).p(x).p(work).l(rows).i(E)); err != nil {
			return err
		}
		return c.launch("loss_sum_"+d.suffix(), 1, LossLanes, 0, *new(args).p(work).p(out).l(rows).d(scale))
	})
}

// ZLossBackward writes dx [T,E], the CPU ZLossBackward (within a few float64 ulps before the
// final rounding). dy is a one-element device tensor of dtype d, or 0 to use dyv.
func (c *CUDA) ZLossBackward(d DType, dx, x, dy cu.DevicePtr, T, E int, scale, dyv float64) error {
	if err := zShape("ZLossBackward", d, T, E); err != nil {
		return err
	}
	rows := int64(T)
	return c.do(func() error {
		return c.launch("zloss_bwd_"+d.suffix(), gridFor(rows*32, 256), 256, 0,
			*new(args).p(x).p(dx).p(dy).d(dyv).l(rows).i(E).d(scale))
	})
}
