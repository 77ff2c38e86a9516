//go:build gomoecuda

package kernels

import (
	"gorgonia.org/cu"
)

// The probs moved to the permuted rows and back, on the device: the launchers of
// permute_probs.cuh's kernels (CPU twin: op/permute_probs.go).

func init() {
	kernelNames = append(kernelNames, "permute_probs_fwd_b4", "permute_probs_fwd_b8", "permute_probs_bwd_b4", "permute_probs_bwd_b8")
}

// PermuteProbsForward writes pp [R] from probs [T,K] (0 for rows that hold no slot).
func (c *CUDA) PermuteProbsForward(d DType, g Geometry, pp, probs, plan cu.DevicePtr) error {
	if err := c.check(d, g, 1); err != nil {
		return err
	}
	_, _, rowOf, tokenOf := planParts(g, plan)
	name := "permute_probs_fwd_b4"
	if d.ProbSize() == 8 {
		name = "permute_probs_fwd_b8"
	}
	R := int64(g.Rows())
	return c.do(func() error {
		return c.launch(name, gridFor(R, 256), 256, 0, *new(args).p(probs).p(pp).p(rowOf).p(tokenOf).i(g.K).l(R).l(int64(g.T)).p(c.status))
	})
}

// PermuteProbsBackward writes dprobs [T,K] = dpp[rowOf[t,k]] (0 for dropped slots).
func (c *CUDA) PermuteProbsBackward(d DType, g Geometry, dprobs, dpp, plan cu.DevicePtr) error {
	if err := c.check(d, g, 1); err != nil {
		return err
	}
	_, _, rowOf, _ := planParts(g, plan)
	name := "permute_probs_bwd_b4"
	if d.ProbSize() == 8 {
		name = "permute_probs_bwd_b8"
	}
	tk := int64(g.T) * int64(g.K)
	return c.do(func() error {
		return c.launch(name, gridFor(tk, 256), 256, 0, *new(args).p(dpp).p(dprobs).p(rowOf).l(tk).l(int64(g.Rows())).p(c.status))
	})
}
