package op

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// ZLoss is the router z-loss of logits [T,E] (float32 or float64):
//
//	loss = coeff/T · Σ_t lse(logits[t])²,  lse(x) = log Σ_e exp(x[e])
//
// a scalar node of the logits' dtype, computed in float64 (each row's maximum subtracted
// first) and rounded once (see kernels.ZLossForward). Its gradient is
// dlogits[t,e] = coeff/T · 2·lse(logits[t]) · softmax(logits[t])_e · dloss.
//
// On device values the loss is a device tensor of scalar shape, and the gradient takes the
// loss's output gradient as a host scalar (G.Grad's seed) or a device one.
func ZLoss(logits *G.Node, coeff float64) (*G.Node, error) {
	const name = "ZLoss"
	if logits == nil {
		return nil, opkit.Errorf(name, "logits is nil")
	}
	dt, err := opkit.NodeDtype(name, "logits", logits)
	if err != nil {
		return nil, err
	}
	if err := checkFloat(name, "logits", dt); err != nil {
		return nil, err
	}
	if math.IsNaN(coeff) || math.IsInf(coeff, 0) {
		return nil, opkit.Errorf(name, "coefficient %v is not finite", coeff)
	}
	if err := checkShape(name, "logits", logits.Shape(), dim{"T", -1}, dim{"E", -1}); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, zLossOp{coeff: coeff}, logits)
}

// zLossOp: logits [T,E] → scalar.
type zLossOp struct {
	opkit.Base
	coeff float64
}

// scale is coeff/T.
func (op zLossOp) scale(T int) float64 { return op.coeff / float64(T) }

func (op zLossOp) Arity() int { return 1 }

// Type: Matrix a → a.
func (op zLossOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, a)
}

func (op zLossOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("ZLoss", ds, "logits")
	if err != nil {
		return nil, err
	}
	if err := checkShape("ZLoss", "logits", s[0], dim{"T", -1}, dim{"E", -1}); err != nil {
		return nil, err
	}
	return tensor.ScalarShape(), nil
}

// zArgs checks the logits value and returns its device backend (nil on the host).
func zArgs(name string, v G.Value) (device.Backend, error) {
	if v == nil {
		return nil, opkit.Errorf(name, "logits is nil")
	}
	if err := checkValue(name, "logits", v, tensor.Dtype{}, dim{"T", -1}, dim{"E", -1}); err != nil {
		return nil, err
	}
	return onDevice(name, v)
}

func (op zLossOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ZLoss"
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	dev, err := zArgs(name, vs[0])
	if err != nil {
		return nil, err
	}
	T := vs[0].Shape()[0]
	if dev != nil {
		v, err := dev.ZLoss(vs[0], op.scale(T))
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return v, nil
	}
	if vs[0].Dtype() == tensor.Float32 {
		return zHost[float32](name, vs[0], op.scale(T))
	}
	return zHost[float64](name, vs[0], op.scale(T))
}

func zHost[F float32 | float64](name string, xv G.Value, scale float64) (G.Value, error) {
	x, err := hostFloats[F](name, "logits", xv)
	if err != nil {
		return nil, err
	}
	s := xv.Shape()
	v, err := kernels.ZLossForward(x, s[0], s[1], scale)
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return lossScalar(v), nil
}

func (op zLossOp) String() string        { return fmt.Sprintf("op.ZLoss{coeff=%v}", op.coeff) }
func (op zLossOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op zLossOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op zLossOp) DiffWRT(n int) []bool {
	w := make([]bool, n)
	for i := range w {
		w[i] = true
	}
	return w
}

// SymDiff: dlogits = zLossGradOp(logits, dloss).
func (op zLossOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, opkit.Errorf("ZLoss", "want 1 input, got %d", len(inputs))
	}
	dx, err := opkit.ApplyOp("ZLossGrad", zLossGradOp(op), inputs[0], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

// DoDiff accumulates the logits' gradient.
func (op zLossOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("ZLoss.DoDiff", inputs, output, 1, 0, "logits", func(gy G.Value) (G.Value, error) {
		return zLossGradOp(op).Do(inputs[0].Value(), gy)
	})
}

// zLossGradOp: logits [T,E], dloss → dlogits [T,E]. It is not differentiable itself.
type zLossGradOp struct {
	opkit.Base
	coeff float64
}

func (op zLossGradOp) Arity() int { return 2 }

// Type: Matrix a → a → Matrix a.
func (op zLossGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, a, G.TensorType{Dims: 2, Of: a})
}

func (op zLossGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("ZLossGrad", ds, "logits", "dloss")
	if err != nil {
		return nil, err
	}
	if err := checkShape("ZLossGrad", "logits", s[0], dim{"T", -1}, dim{"E", -1}); err != nil {
		return nil, err
	}
	return s[0].Clone(), nil
}

func (op zLossGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ZLossGrad"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	dev, err := zArgs(name, vs[0])
	if err != nil {
		return nil, err
	}
	dt := vs[0].Dtype()
	dy, dyv, err := lossSeed(name, vs[1], dt, dev)
	if err != nil {
		return nil, err
	}
	T, E := vs[0].Shape()[0], vs[0].Shape()[1]
	scale := zLossOp(op).scale(T)
	if dev != nil {
		v, err := dev.ZLossGrad(vs[0], scale, dy, dyv)
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return v, nil
	}
	if dt == tensor.Float32 {
		return zGradHost[float32](name, vs[0], T, E, scale, dyv)
	}
	return zGradHost[float64](name, vs[0], T, E, scale, dyv)
}

func zGradHost[F float32 | float64](name string, xv G.Value, T, E int, scale, dy float64) (G.Value, error) {
	x, err := hostFloats[F](name, "logits", xv)
	if err != nil {
		return nil, err
	}
	out, dx := newDense[F](T, E)
	if err := kernels.ZLossBackward(dx, x, T, E, scale, dy); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op zLossGradOp) String() string        { return fmt.Sprintf("op.ZLossGrad{coeff=%v}", op.coeff) }
func (op zLossGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op zLossGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = zLossOp{}
	_ G.ADOp = zLossOp{}
)
