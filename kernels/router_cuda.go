//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// The fused router on the device: the launchers of router.cuh's kernels (CPU twin: router.go).
// Each is one launch of one warp per token.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "route_topk4_"+s, "route_topk8_"+s, "route_topk32_"+s,
			"route_probs_"+s, "route_probs_bwd_"+s)
	}
}

// routerLimits checks what the device kernels support beyond Router.Check: float32 or
// float64, at most 1024 experts and 64 groups (as TopK).
func routerLimits(name string, d DType, r Router, E, K int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %s: dtype %v, want float32 or float64", name, d)
	}
	if err := r.Check(E, K); err != nil {
		return err
	}
	if d == F32 {
		if err := scaleFits[float32](name, r.Scale); err != nil {
			return err
		}
	}
	return topkDeviceLimits(name, E, r.Groups)
}

// routerGrid is the launch of one warp per token (128 threads a block).
func routerGrid(T int64) int { return gridFor(T*32, 128) }

// RouterTopK writes ids [T,K] int32 for logits [T,E] (bias [E] of the same dtype, or 0), as
// the CPU RouterTopK. A NaN selection or group score sets StatusNaNScore.
func (c *CUDA) RouterTopK(d DType, ids, logits, bias cu.DevicePtr, T int64, E, K int, r Router) error {
	if err := routerLimits("RouterTopK", d, r, E, K); err != nil {
		return err
	}
	npl := 32
	switch {
	case E <= 128:
		npl = 4
	case E <= 256:
		npl = 8
	}
	per := max(1, K/r.Kept)
	return c.do(func() error {
		return c.launch(fmt.Sprintf("route_topk%d_%s", npl, d.suffix()), routerGrid(T), 128, 0,
			*new(args).p(logits).p(bias).p(ids).l(T).i(E).i(K).i(int(r.Score)).i(r.preFlag()).i(r.Groups).i(r.Kept).i(per).p(c.status))
	})
}

// RouterProbs writes probs [T,K] for logits [T,E] and ids [T,K], as the CPU RouterProbs (an id
// outside [-1, E) sets StatusBadID and counts as -1, where the CPU's is an error).
func (c *CUDA) RouterProbs(d DType, probs, logits, ids cu.DevicePtr, T int64, E, K int, r Router) error {
	if err := routerLimits("RouterProbs", d, r, E, K); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("route_probs_"+d.suffix(), routerGrid(T), 128, 0,
			*new(args).p(logits).p(ids).p(probs).l(T).i(E).i(K).i(int(r.Score)).i(r.preFlag()).d(r.Scale).p(c.status))
	})
}

// RouterProbsBackward writes dlogits [T,E] from dprobs [T,K], as the CPU RouterProbsBackward.
func (c *CUDA) RouterProbsBackward(d DType, dlogits, logits, ids, dprobs cu.DevicePtr, T int64, E, K int, r Router) error {
	if err := routerLimits("RouterProbsBackward", d, r, E, K); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("route_probs_bwd_"+d.suffix(), routerGrid(T), 128, 0,
			*new(args).p(logits).p(ids).p(dprobs).p(dlogits).l(T).i(E).i(K).i(int(r.Score)).i(r.preFlag()).d(r.Scale).p(c.status))
	})
}
