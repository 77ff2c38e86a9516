package op

import (
	"fmt"
	"hash"
	"math/rand"
	"sync/atomic"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
)

// JitterNoise returns a node of x's shape and dtype holding fresh uniform noise in
// [1-eps, 1+eps) on every run (x is read only for its shape), for multiplicative input jitter:
// G.HadamardProd(x, JitterNoise(x, eps, seed)). The n-th run of the node draws from a
// math/rand source seeded with seed+n, so a program that builds the same graph and runs it
// the same number of times sees the same noise. The noise is a constant to the gradient.
func JitterNoise(x *G.Node, eps float64, seed int64) (*G.Node, error) {
	if x == nil {
		return nil, fmt.Errorf("gomoe: JitterNoise: x is nil")
	}
	if err := wantFloat(x.Dtype()); err != nil {
		return nil, fmt.Errorf("gomoe: JitterNoise: %v", err)
	}
	if !(eps >= 0 && eps < 1) {
		return nil, fmt.Errorf("gomoe: JitterNoise: eps=%g, want 0 <= eps < 1", eps)
	}
	if x.Dims() == 0 {
		return nil, fmt.Errorf("gomoe: JitterNoise: x is a scalar, want a tensor")
	}
	return opkit.ApplyOp("JitterNoise", &jitterNoiseOp{eps: eps, seed: seed, dims: x.Dims()}, x)
}

// jitterNoiseOp is a pointer op: its run counter is state shared by every use of the node.
type jitterNoiseOp struct {
	opkit.Base
	opkit.NoGrad
	eps  float64
	seed int64
	dims int
	runs atomic.Int64
}

func (op *jitterNoiseOp) Arity() int { return 1 }
func (op *jitterNoiseOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: op.dims, Of: a}, G.TensorType{Dims: op.dims, Of: a})
}

func (op *jitterNoiseOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 1 {
		return nil, fmt.Errorf("gomoe: JitterNoise: want 1 input, got %d", len(ds))
	}
	s, ok := ds[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("gomoe: JitterNoise: input has no static shape (%T)", ds[0])
	}
	return s.Clone(), nil
}

func (op *jitterNoiseOp) Do(vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity("JitterNoise", vs, 1); err != nil {
		return nil, err
	}
	dev, err := onDevice("JitterNoise", vs...)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewSource(op.seed + op.runs.Add(1) - 1))
	out := tensor.New(tensor.Of(vs[0].Dtype()), tensor.WithShape(vs[0].Shape().Clone()...))
	lo, w := 1-op.eps, 2*op.eps
	switch out.Dtype() {
	case tensor.Float32:
		o := out.Float32s()
		for i := range o {
			o[i] = float32(lo + w*rng.Float64())
		}
	case tensor.Float64:
		o := out.Float64s()
		for i := range o {
			o[i] = lo + w*rng.Float64()
		}
	default:
		return nil, checkFloat("JitterNoise", "x", out.Dtype())
	}
	if dev != nil { // the same noise, drawn on the host and uploaded (one copy of T·H values)
		v, err := dev.Upload(vs[0], out)
		return v, opkit.Wrap("JitterNoise", err)
	}
	return out, nil
}

func (op *jitterNoiseOp) String() string {
	return fmt.Sprintf("op.JitterNoise{eps=%v seed=%d dims=%d}", op.eps, op.seed, op.dims)
}
func (op *jitterNoiseOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op *jitterNoiseOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = &jitterNoiseOp{}
	_ G.ADOp = &jitterNoiseOp{}
)
