package trainutil

import (
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/op"
)

// Param creates a float32 learnable matrix (or vector when cols is 0) named
// name, filled with N(0, std²) from rng (zeros when std is 0).
func Param(g *G.ExprGraph, rng *rand.Rand, name string, rows, cols int, std float64) *G.Node {
	n := rows
	shape := []int{rows}
	if cols > 0 {
		n *= cols
		shape = append(shape, cols)
	}
	data := make([]float32, n)
	for i := range data {
		if std != 0 {
			data[i] = float32(rng.NormFloat64() * std)
		}
	}
	t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
	if cols > 0 {
		return G.NewMatrix(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(t))
	}
	return G.NewVector(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// Linear is an affine layer y = x·W + b.
type Linear struct {
	W, B *G.Node
}

// NewLinear returns a Linear from in to out features with He-style
// initialisation (std = gain/√in) and zero bias.
func NewLinear(g *G.ExprGraph, rng *rand.Rand, name string, in, out int, gain float64) *Linear {
	return &Linear{
		W: Param(g, rng, name+".w", in, out, gain/math.Sqrt(float64(in))),
		B: Param(g, rng, name+".b", out, 0, 0),
	}
}

// Forward applies the layer to x [T,in].
func (l *Linear) Forward(x *G.Node) (*G.Node, error) {
	xw, err := G.Mul(x, l.W)
	if err != nil {
		return nil, fmt.Errorf("linear %s: %w", l.W.Name(), err)
	}
	y, err := G.BroadcastAdd(xw, l.B, nil, []byte{0})
	if err != nil {
		return nil, fmt.Errorf("linear %s bias: %w", l.W.Name(), err)
	}
	return y, nil
}

// Learnables returns W and B.
func (l *Linear) Learnables() G.Nodes { return G.Nodes{l.W, l.B} }

// GELU returns the tanh approximation of the Gaussian error linear unit,
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
func GELU(x *G.Node) (*G.Node, error) {
	x3, err := G.Cube(x)
	if err != nil {
		return nil, err
	}
	c3, err := scale(x3, 0.044715)
	if err != nil {
		return nil, err
	}
	inner, err := G.Add(x, c3)
	if err != nil {
		return nil, err
	}
	if inner, err = scale(inner, math.Sqrt(2/math.Pi)); err != nil {
		return nil, err
	}
	th, err := G.Tanh(inner)
	if err != nil {
		return nil, err
	}
	onep, err := G.Add(th, constant(x, 1))
	if err != nil {
		return nil, err
	}
	h, err := G.HadamardProd(x, onep)
	if err != nil {
		return nil, err
	}
	return scale(h, 0.5)
}

// constant returns c as a scalar constant of x's dtype.
func constant(x *G.Node, c float64) *G.Node {
	if x.Dtype() == tensor.Float64 {
		return G.NewConstant(c)
	}
	return G.NewConstant(float32(c))
}

// scale returns c·x.
func scale(x *G.Node, c float64) (*G.Node, error) { return G.Mul(x, constant(x, c)) }

// SiLU returns x·σ(x).
func SiLU(x *G.Node) (*G.Node, error) {
	s, err := G.Sigmoid(x)
	if err != nil {
		return nil, err
	}
	return G.HadamardProd(x, s)
}

// CrossEntropy returns the mean negative log-likelihood of the one-hot
// targets [T,C] under logits [T,C]:
//
//	(1/T)·Σ_t (logsumexp(logits[t]) − ⟨logits[t], onehot[t]⟩).
//
// It uses gomoe's stable row log-sum-exp; Gorgonia's LogSoftMax takes the
// maximum of the wrong row (tensor v0.9.24 uses x[0] for every row), so it
// overflows or underflows once logits grow, and training turns to NaN.
func CrossEntropy(logits, onehot *G.Node) (*G.Node, error) {
	lse, err := op.RowLogSumExp(logits)
	if err != nil {
		return nil, err
	}
	picked, err := G.HadamardProd(logits, onehot)
	if err != nil {
		return nil, err
	}
	sp, err := G.Sum(picked)
	if err != nil {
		return nil, err
	}
	sl, err := G.Sum(lse)
	if err != nil {
		return nil, err
	}
	nll, err := G.Sub(sl, sp)
	if err != nil {
		return nil, err
	}
	rows := float64(logits.Shape()[0])
	if logits.Dtype() == tensor.Float64 {
		return G.Mul(nll, G.NewConstant(1/rows))
	}
	return G.Mul(nll, G.NewConstant(float32(1/rows)))
}

// CosineLR returns the learning rate at step (0-based) of total steps: a
// cosine decay from base to base·floor.
func CosineLR(base, floor float64, step, total int) float64 {
	if total <= 1 {
		return base
	}
	f := float64(step) / float64(total-1)
	return base * (floor + (1-floor)*0.5*(1+math.Cos(math.Pi*f)))
}

// RMSNorm scales each row of its input to unit root-mean-square and then by
// a learnable gain per feature: y = x / sqrt(mean(x²) + ε) ⊙ gain.
//
// The examples put it in front of every MoE block (pre-norm), so the router
// sees inputs of a fixed scale however the residual stream grows.
type RMSNorm struct {
	Gain *G.Node
	Eps  float64
}

// NewRMSNorm returns an RMSNorm over width features with gain 1.
func NewRMSNorm(g *G.ExprGraph, name string, width int) *RMSNorm {
	ones := make([]float32, width)
	for i := range ones {
		ones[i] = 1
	}
	gain := G.NewVector(g, tensor.Float32, G.WithShape(width), G.WithName(name+".gain"),
		G.WithValue(tensor.New(tensor.WithShape(width), tensor.WithBacking(ones))))
	return &RMSNorm{Gain: gain, Eps: 1e-6}
}

// Forward normalises x [T,H].
func (n *RMSNorm) Forward(x *G.Node) (*G.Node, error) {
	sq, err := G.Square(x)
	if err != nil {
		return nil, err
	}
	ms, err := G.Mean(sq, 1)
	if err != nil {
		return nil, err
	}
	if ms, err = G.Add(ms, G.NewConstant(float32(n.Eps))); err != nil {
		return nil, err
	}
	// 1/sqrt as two ops: the gradient of Gorgonia's InverseSqrt (v0.9.18)
	// is wrong.
	sd, err := G.Sqrt(ms)
	if err != nil {
		return nil, err
	}
	r, err := G.Inverse(sd)
	if err != nil {
		return nil, err
	}
	xn, err := G.BroadcastHadamardProd(x, r, nil, []byte{1})
	if err != nil {
		return nil, err
	}
	return G.BroadcastHadamardProd(xn, n.Gain, nil, []byte{0})
}

// Learnables returns the gain.
func (n *RMSNorm) Learnables() G.Nodes { return G.Nodes{n.Gain} }
