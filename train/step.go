package train

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
)

// Step runs one training step on the tape machine vm: RunAll (forward and backward), the
// solver's update of params from their gradient nodes, then vm.Reset. When the weights live in
// GPU memory it then recycles the step's device buffers (device.Engine.EndStep), so repeated
// steps reuse the same device memory: read what you need from the step (Scalar, CopyOut) in
// after, which runs between RunAll and the update (nil: nothing).
//
// The graph must hold the gradient nodes (G.Grad(cost, params...)) and vm must be made
// without BindDualValues. Read the cost in after from its Value (Scalar(cost.Value())). Read
// any other node through G.Read (G.Read(pred, &v) before the machine is made): the tape
// machine reuses the buffers of values the backward pass no longer needs, so after RunAll a
// prediction's Value may hold its gradient instead. On the GPU set each read target to nil
// before every step: a read copies into a non-nil target, and on the GPU the target from the
// step before is recycled step memory that other values of this step may be using.
func Step(vm G.VM, solver G.Solver, params G.Nodes, after func() error) error {
	if vm == nil || solver == nil {
		return fmt.Errorf("gomoe: train: Step: nil machine or solver")
	}
	if err := vm.RunAll(); err != nil {
		vm.Reset()
		endStep(params)
		return opkit.Wrap("train: Step", err)
	}
	if after != nil {
		if err := after(); err != nil {
			vm.Reset()
			endStep(params)
			return err
		}
	}
	err := solver.Step(valueGrads(params))
	vm.Reset()
	endStep(params)
	return err
}

// valueGrads is params as a solver takes them.
func valueGrads(params G.Nodes) []G.ValueGrad {
	vgs := make([]G.ValueGrad, len(params))
	for i, p := range params {
		vgs[i] = p
	}
	return vgs
}

// endStep ends the step of the device engine of the first param that has a value (nothing for
// host values).
func endStep(params G.Nodes) {
	for _, p := range params {
		if p == nil {
			continue
		}
		if v := p.Value(); opkit.Missing(v) == "" {
			if dev := device.Of(v); dev != nil {
				dev.EndStep(v)
			}
			return
		}
	}
}

// Scalar returns the value of a one-element float value (a loss), copying it from the GPU if
// it lives there.
func Scalar(v G.Value) (float64, error) {
	if m := opkit.Missing(v); m != "" {
		return 0, fmt.Errorf("gomoe: train: Scalar of a value that is %s (read the node with G.Read after a run)", m)
	}
	if v.Shape().TotalSize() != 1 {
		return 0, fmt.Errorf("gomoe: train: Scalar of a value of shape %v", v.Shape())
	}
	if dev := device.Of(v); dev != nil {
		return dev.Scalar(v)
	}
	switch x := v.Data().(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	case []float32:
		return float64(x[0]), nil
	case []float64:
		return x[0], nil
	}
	if d, ok := v.(*tensor.Dense); ok {
		return 0, fmt.Errorf("gomoe: train: Scalar of dtype %v", d.Dtype())
	}
	return 0, fmt.Errorf("gomoe: train: Scalar of a %T", v)
}
