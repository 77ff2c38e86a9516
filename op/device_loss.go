package op

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
)

// deviceLoss runs the routing losses (BalanceLoss, ZLoss) on device values. The registered
// device backend implements it next to deviceKernels; the loss ops reach it with
// device.(deviceLoss) when their inputs live on the device.
//
// A loss is returned as a device tensor of scalar shape () (one element, no dims: the engine
// allocates it like any other output), so that the forward never waits for the GPU. A
// gradient method takes the output gradient either as such a device scalar (dy != nil) or,
// with dy == nil, as the host number dyv: gorgonia seeds the cost's gradient (G.Grad) with a
// host constant, which the op reads on the host (it is one number, not a device value), an
// exception to the rule that host and device values are not mixed.
type deviceLoss interface {
	// BalanceLoss returns scale·Σ_b Σ_e N[b,e]·Σ_{t in b} s[t,e] for ids [T,K] int32 and
	// scores [T,E] (seqs sequences), with scores' dtype, as kernels.BalanceLossForward.
	BalanceLoss(ids, scores G.Value, experts, topK, seqs int, scale float64) (G.Value, error)
	// BalanceLossGrad returns ds [T,E] of dtype dt: (scale·dy)·N[b(t),e].
	BalanceLossGrad(ids G.Value, dt tensor.Dtype, experts, topK, seqs int, scale float64, dy G.Value, dyv float64) (G.Value, error)
	// ZLoss returns scale·Σ_t lse(logits[t])² for logits [T,E], with logits' dtype.
	ZLoss(logits G.Value, scale float64) (G.Value, error)
	// ZLossGrad returns dlogits [T,E] = (2·scale·dy)·lse(t)·softmax(logits[t]).
	ZLossGrad(logits G.Value, scale float64, dy G.Value, dyv float64) (G.Value, error)
}

// lossDevice returns the registered backend's loss kernels, or an error naming the op.
func lossDevice(name string) (deviceLoss, error) {
	d, ok := device.(deviceLoss)
	if !ok {
		return nil, opkit.Errorf(name, "the device backend %T has no loss kernels", device)
	}
	return d, nil
}

// lossSeed reads the output gradient dy of a loss op (dtype dt): a host scalar (a gorgonia
// Scalar such as the G.Grad seed, or a one-element host tensor) gives its value; a
// one-element device tensor is returned as is when dev (the op's inputs are on the device)
// and is an error otherwise.
func lossSeed(name string, dy G.Value, dt tensor.Dtype, dev bool) (G.Value, float64, error) {
	if dy == nil {
		return nil, 0, opkit.Errorf(name, "the output gradient is nil")
	}
	if dy.Dtype() != dt {
		return nil, 0, opkit.Errorf(name, "the output gradient has dtype %v, want %v", dy.Dtype(), dt)
	}
	if dy.Shape().TotalSize() != 1 {
		return nil, 0, opkit.Errorf(name, "the output gradient has shape %v, want a scalar", opkit.ShapeString(dy.Shape()))
	}
	if device != nil && device.Owns(dy) {
		if !dev {
			return nil, 0, opkit.Errorf(name, "the output gradient is on the device but the inputs are on the host")
		}
		if d, ok := dy.(*tensor.Dense); ok && d.RequiresIterator() {
			return nil, 0, opkit.Errorf(name, "the output gradient is a device view")
		}
		return dy, 0, nil
	}
	switch x := dy.Data().(type) {
	case float32:
		return nil, float64(x), nil
	case float64:
		return nil, x, nil
	case []float32:
		return nil, float64(x[0]), nil
	case []float64:
		return nil, x[0], nil
	}
	return nil, 0, opkit.Errorf(name, "the output gradient holds %T, want a float", dy.Data())
}

// lossScalar wraps a host loss value as gorgonia's scalar of dtype F.
func lossScalar[F float32 | float64](v F) G.Value {
	switch x := any(v).(type) {
	case float32:
		return G.NewF32(x)
	default:
		return G.NewF64(x.(float64))
	}
}
