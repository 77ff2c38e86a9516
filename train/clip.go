package train

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
)

// ClipGradNorm scales the gradients of vgs in place so that their global L2 norm
// sqrt(Σ g²) over every element of every gradient is at most maxNorm, and returns the norm
// before clipping. As PyTorch's torch.nn.utils.clip_grad_norm_, the scale is
// maxNorm/(norm+1e-6) and is applied only when it is below 1.
//
// Adam and SGD call it themselves when their MaxGradNorm is set; call it directly before
// another solver. The squares are summed in float64 in the order of vgs (host gradients);
// a gradient in GPU memory (gomoecuda build) is summed on the GPU by rows of 1024 elements,
// the squares and their row sums in float64 (for float32 and bfloat16 gradients too), and
// the row sums in float64 in a fixed order on the GPU (their sums come to the host in one
// copy), so a GPU norm agrees with the CPU's within float64 rounding (its additions run in
// another order).
// (A step captured by GraphStep clips with the same kernels and the same bits without
// coming to the host at all.) The scaling multiplies each element by the scale rounded to
// the gradient's dtype (float32 for bfloat16, rounded once to bfloat16), on the host and on
// the GPU alike.
//
// Weights may share one gradient buffer (Gorgonia gives both inputs of an Add the same
// gradient): the norm counts it once per weight, as the gradient of the cost wrt all the
// weights, and it is scaled once. Gradients that share memory only in part are an error; so
// is a shared buffer in a step captured by GraphStep, whose device clip would scale it once
// per weight.
//
// A NaN or infinite norm is an error, and no gradient is changed (nor on a bad input).
func ClipGradNorm(vgs []G.ValueGrad, maxNorm float64) (float64, error) {
	return ClipGradNormWith(vgs, maxNorm, nil)
}

// ClipGradNormWith is ClipGradNorm with the global sum of squares computed by total from the
// gradients' own sums of squares (one per gradient, in the order of vgs, each as ClipGradNorm
// computes it); nil: their sum in order, as ClipGradNorm. With expert parallelism,
// ep.ClipGradNorm passes a total that adds the sharded weights' sums over the ranks, so that
// every rank clips by the same global norm. An error from total changes no gradient.
func ClipGradNormWith(vgs []G.ValueGrad, maxNorm float64, total func(sq []float64) (float64, error)) (float64, error) {
	ps, err := check("ClipGradNorm", vgs)
	if err != nil {
		return 0, err
	}
	if !(maxNorm > 0) || math.IsInf(maxNorm, 0) {
		return 0, fmt.Errorf("gomoe: train: ClipGradNorm: maxNorm %v, want a finite value > 0", maxNorm)
	}
	n, err := clipWith(ps, maxNorm, total)
	if err != nil {
		return n, opkit.Wrap("train: ClipGradNorm", err)
	}
	return n, nil
}

// clip clips the gradients of ps to maxNorm (0: none, and the norm returned is NaN).
func clip(ps []pair, maxNorm float64) (float64, error) { return clipWith(ps, maxNorm, nil) }

// clipWith is clip with the sum of squares from total (nil: the sum in order).
func clipWith(ps []pair, maxNorm float64, total func([]float64) (float64, error)) (float64, error) {
	if maxNorm == 0 {
		return math.NaN(), nil
	}
	// The GPU gradients' sums come to the host together (one wait per GPU, not per gradient:
	// the backend groups them by engine), then every sum is added in the order of ps.
	sq := make([]float64, len(ps))
	var dev device.Backend
	var onDev []int
	for i, p := range ps {
		if p.gpu == nil {
			sq[i] = sumSquares(p.g)
			continue
		}
		dev = p.gpu
		onDev = append(onDev, i)
	}
	if dev != nil {
		gs := make([]*tensor.Dense, len(onDev))
		for j, i := range onDev {
			gs[j] = ps[i].g
		}
		s, err := dev.SumSquares(gs)
		if err != nil {
			return math.NaN(), fmt.Errorf("gradient norm: %w", err)
		}
		for j, i := range onDev {
			sq[i] = s[j]
		}
	}
	sum := 0.0
	if total == nil {
		for _, s := range sq {
			sum += s
		}
	} else {
		var err error
		if sum, err = total(sq); err != nil {
			return math.NaN(), fmt.Errorf("gradient norm: %w", err)
		}
	}
	norm := math.Sqrt(sum)
	if math.IsNaN(norm) || math.IsInf(norm, 0) {
		return norm, fmt.Errorf("the gradient norm is %v: no weight updated", norm)
	}
	scale := maxNorm / (norm + 1e-6)
	if scale >= 1 {
		return norm, nil
	}
	for _, p := range ps {
		if p.sharesGrad {
			continue // scaled with the first weight that has it
		}
		var err error
		if p.gpu != nil {
			err = p.gpu.Scale(p.g, scale)
		} else {
			scaleGrad(p.g, scale)
		}
		if err != nil {
			return norm, fmt.Errorf("clip %s: %w", p.wLabel, err)
		}
	}
	return norm, nil
}

// sumSquares is Σ g² of a host gradient, in float64 in element order.
func sumSquares(g *tensor.Dense) float64 {
	s := 0.0
	switch x := hostData(g).(type) {
	case []float32:
		for _, v := range x {
			s += float64(v) * float64(v)
		}
	case []float64:
		for _, v := range x {
			s += v * v
		}
	case []bfloat16.BFloat16:
		for _, v := range x {
			f := float64(v.Float32())
			s += f * f
		}
	}
	return s
}

// scaleGrad multiplies a host gradient by s in place: in float32 for float32 and bfloat16
// (then rounded to bfloat16), in float64 for float64, as the GPU's element-wise kernel.
func scaleGrad(g *tensor.Dense, s float64) {
	switch x := hostData(g).(type) {
	case []float32:
		f := float32(s)
		for i := range x {
			x[i] *= f
		}
	case []float64:
		for i := range x {
			x[i] *= s
		}
	case []bfloat16.BFloat16:
		f := float32(s)
		for i := range x {
			x[i] = bfloat16.FromFloat32(x[i].Float32() * f)
		}
	}
}
