package op

import (
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit/opkittest"
	"github.com/gomoe/gomoe/kernels"
)

// TestOpIdentity checks every op type of the package: changing any one parameter changes the
// op's String and its hash (else Gorgonia would merge two different nodes of one input), and
// WriteHash and Hashcode follow String.
func TestOpIdentity(t *testing.T) {
	// Drop is set: a zero Drop and DropByPosition act alike, and their ops are one op.
	g := kernels.Geometry{T: 4, K: 2, E: 3, A: 1, Drop: kernels.DropByPosition}
	gc := kernels.Geometry{T: 4, K: 2, E: 3, A: 2, Mode: kernels.Capacity, C: 2, Drop: kernels.DropByProb, PadToCapacity: true}
	bl := balanceLossOp{e: 3, k: 2, seqs: 1, coeff: 0.5}
	rt := kernels.Router{Score: kernels.RouterSigmoid, Pre: true, Groups: 4, Kept: 2, Scale: 2.5}
	ops := []G.Op{
		addScalarsOp{n: 2}, bl, balanceLossGradOp{f: bl}, biasAddOp{}, colSumOp{},
		castOp{from: tensor.Float32, to: tensor.Float64, dims: 2}, ceOp{}, ceGradOp{},
		embedOp{v: 10}, embedGradOp{v: 10}, expertLoadOp{e: 3, seqs: 1, dt: tensor.Float32},
		gatherTopKOp{e: 3}, gatherTopKGradOp{e: 3},
		gmmOp{geo: g}, gmmOp{geo: gc}, gmmRowsGradOp{geo: g}, gmmWeightsGradOp{geo: g, h: 5},
		&jitterNoiseOp{eps: 0.01, seed: 7, dims: 2}, lseOp{}, lseGradOp{}, matMulOp{ta: true},
		mixedMatMulOp{ta: true, a: tensor.Float32, b: tensor.Float32, out: tensor.Float32},
		permuteOp{g: g}, permuteOp{g: gc}, permuteGradOp{g: g}, permuteProbsOp{g: g}, permuteProbsGradOp{g: gc},
		planOp{g: g}, planOp{g: gc, withProbs: true},
		rmsOp{eps: 1e-6}, rmsGradOp{eps: 1e-6, which: 1}, reluOp{dims: 2}, reluGradOp{dims: 2},
		scaleOp{c: 0.5, dims: 2}, scaleRowsOp{}, rowDotOp{out: tensor.Float32}, sinkOp{},
		swigluPackedOp{}, swigluPackedGradOp{},
		topkOp{k: 2, e: 8, groups: 4, kept: 2, bias: true},
		routerTopKOp{k: 2, e: 8, r: rt, bias: true}, routerProbsOp{e: 8, k: 2, r: rt},
		routerProbsGradOp{p: routerProbsOp{e: 8, k: 2, r: rt}},
		unpermuteOp{g: g, weighted: true}, unpermuteGradRowsOp{g: gc}, unpermuteGradProbsOp{g: g, pdt: tensor.Float32},
		zLossOp{coeff: 1e-3}, zLossGradOp{coeff: 1e-3},
	}
	for k := pwSwiGLU; k <= pwRowNormalize; k++ {
		ops = append(ops, pwOp{k: k, dims: 2}, pwGradOp{k: k, dims: 2, which: 1})
	}
	opkittest.CheckCovers(t, ".", ops)
	opkittest.CheckIdentity(t, ops)
}
