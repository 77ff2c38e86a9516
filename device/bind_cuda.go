//go:build gomoecuda

package device

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Bind copies the host value of every node (weights, inputs) to the device and binds the
// copy to the node with G.Let, so that a tape machine made afterwards with G.WithEngine(e)
// runs the graph on the GPU. Nodes already bound to a device value are left alone. The device
// copies persist until Release. Call it before G.NewTapeMachine.
func (e *Engine) Bind(nodes ...*G.Node) error {
	for _, n := range nodes {
		if n == nil {
			return fmt.Errorf("device: Bind: nil node")
		}
		v := n.Value()
		if v == nil {
			return fmt.Errorf("device: Bind: node %s has no value", n.Name())
		}
		t, ok := v.(tensor.Tensor)
		if !ok {
			return fmt.Errorf("device: Bind: node %s holds a %T, want a tensor", n.Name(), v)
		}
		if e.Owns(t) {
			continue
		}
		d, err := e.CopyIn(t)
		if err != nil {
			return fmt.Errorf("device: Bind: node %s: %w", n.Name(), err)
		}
		if err := G.Let(n, d); err != nil {
			_ = e.Release(d)
			return fmt.Errorf("device: Bind: node %s: %w", n.Name(), err)
		}
	}
	return nil
}
