package op

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
)

// The routing losses (BalanceLoss, ZLoss) run on device values through device.Backend's loss
// methods. A loss is returned as a device tensor of scalar shape (one element, no dims), so
// that the forward never waits for the GPU. A gradient method takes the output gradient either
// as such a device scalar (dy != nil) or, with dy == nil, as the host number dyv: gorgonia
// seeds the cost's gradient (G.Grad) with a host constant, which the op reads on the host (it
// is one number, not a device value), an exception to the rule that host and device values
// are not mixed.

// lossSeed reads the output gradient dy of a loss op (dtype dt): a host scalar (a gorgonia
// Scalar such as the G.Grad seed, or a one-element host tensor) gives its value; a
// one-element device tensor is returned as is when it lives on dev (the backend of the op's
// inputs; nil: they are on the host) and is an error otherwise.
func lossSeed(name string, dy G.Value, dt tensor.Dtype, dev device.Backend) (G.Value, float64, error) {
	if dy == nil {
		return nil, 0, opkit.Errorf(name, "the output gradient is nil")
	}
	if dy.Dtype() != dt {
		return nil, 0, opkit.Errorf(name, "the output gradient has dtype %v, want %v", dy.Dtype(), dt)
	}
	if dy.Shape().TotalSize() != 1 {
		return nil, 0, opkit.Errorf(name, "the output gradient has shape %v, want a scalar", opkit.ShapeString(dy.Shape()))
	}
	if device.Of(dy) != nil {
		if dev == nil {
			return nil, 0, opkit.Errorf(name, "the output gradient is on the device but the inputs are on the host")
		}
		if !dev.Owns(dy) {
			return nil, 0, opkit.Errorf(name, "the output gradient is on another device than the inputs; copy them to one place first")
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
