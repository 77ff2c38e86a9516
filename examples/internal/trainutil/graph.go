package trainutil

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/train"
)

// Param creates a float32 learnable matrix (or vector when cols is 0) named
// name, filled with N(0, std²) from in (zeros when std is 0).
func Param(g *G.ExprGraph, in *train.Init, name string, rows, cols int, std float64) (*G.Node, error) {
	shape := []int{rows}
	if cols > 0 {
		shape = append(shape, cols)
	}
	t, err := in.Normal(tensor.Float32, std, shape...)
	if err != nil {
		return nil, fmt.Errorf("param %s: %w", name, err)
	}
	if cols > 0 {
		return G.NewMatrix(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(t)), nil
	}
	return G.NewVector(g, tensor.Float32, G.WithShape(shape...), G.WithName(name), G.WithValue(t)), nil
}

// Linear is an affine layer y = x·W + b.
type Linear struct {
	W, B *G.Node
}

// NewLinear returns a Linear from in to out features with He-style
// initialisation (std = gain/√in, drawn from init) and zero bias.
func NewLinear(g *G.ExprGraph, init *train.Init, name string, in, out int, gain float64) (*Linear, error) {
	w, err := Param(g, init, name+".w", in, out, gain/math.Sqrt(float64(in)))
	if err != nil {
		return nil, err
	}
	b, err := Param(g, init, name+".b", out, 0, 0)
	if err != nil {
		return nil, err
	}
	return &Linear{W: w, B: b}, nil
}

// Forward applies the layer to x [T,in]: a matrix product (op.MatMul: the packed AVX2/AVX-512
// GEMM on the CPU, cuBLAS on the GPU) and op.BiasAdd, both of which run on the GPU when the
// weights live there.
func (l *Linear) Forward(x *G.Node) (*G.Node, error) {
	xw, err := op.MatMul(x, l.W)
	if err != nil {
		return nil, fmt.Errorf("linear %s: %w", l.W.Name(), err)
	}
	y, err := op.BiasAdd(xw, l.B)
	if err != nil {
		return nil, fmt.Errorf("linear %s bias: %w", l.W.Name(), err)
	}
	return y, nil
}

// Learnables returns W and B.
func (l *Linear) Learnables() G.Nodes { return G.Nodes{l.W, l.B} }

// GELU returns the tanh approximation of the Gaussian error linear unit,
// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) (op.GELU).
func GELU(x *G.Node) (*G.Node, error) { return op.GELU(x) }

// CrossEntropy returns the mean negative log-likelihood of the one-hot
// targets [T,C] under logits [T,C] (op.CrossEntropy):
//
//	(1/T)·Σ_t (logsumexp(logits[t]) − ⟨logits[t], onehot[t]⟩).
//
// The row log-sum-exp is stable (Gorgonia's LogSoftMax in tensor v0.9.24 takes
// the maximum of the wrong row and overflows once logits grow).
func CrossEntropy(logits, onehot *G.Node) (*G.Node, error) {
	return op.CrossEntropy(logits, onehot)
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

// Forward normalises x [T,H] (op.RMSNorm).
func (n *RMSNorm) Forward(x *G.Node) (*G.Node, error) { return op.RMSNorm(x, n.Gain, n.Eps) }

// Learnables returns the gain.
func (n *RMSNorm) Learnables() G.Nodes { return G.Nodes{n.Gain} }
