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
// copies persist until Release. Call it before G.NewTapeMachine. On an error no node is
// rebound and the copies made so far are released.
func (e *Engine) Bind(nodes ...*G.Node) error {
	type bound struct {
		n    *G.Node
		host G.Value
		dev  *tensor.Dense
	}
	var done []bound
	undo := func() {
		for _, b := range done {
			if b.n.Value() != b.host {
				_ = G.Let(b.n, b.host)
			}
			_ = e.Release(b.dev)
		}
	}
	for _, n := range nodes {
		if n == nil {
			undo()
			return fmt.Errorf("device: Bind: nil node")
		}
		v := n.Value()
		if v == nil {
			undo()
			return fmt.Errorf("device: Bind: node %s has no value", n.Name())
		}
		t, ok := v.(tensor.Tensor)
		if !ok {
			undo()
			return fmt.Errorf("device: Bind: node %s holds a %T, want a tensor", n.Name(), v)
		}
		if e.Owns(t) {
			continue
		}
		d, err := e.CopyIn(t)
		if err != nil {
			undo()
			return fmt.Errorf("device: Bind: node %s: %w", n.Name(), err)
		}
		done = append(done, bound{n, v, d})
	}
	for i, b := range done {
		if err := G.Let(b.n, b.dev); err != nil {
			done = done[:i+1]
			undo()
			return fmt.Errorf("device: Bind: node %s: %w", b.n.Name(), err)
		}
	}
	return nil
}
