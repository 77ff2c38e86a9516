package trainutil

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
)

// RunStep runs vm once (the forward and backward pass of training step
// step) and returns the loss that read then yields. It returns an error
// naming the step when the run fails or the loss is NaN or infinite.
func RunStep(vm G.VM, step int, read func() (float64, error)) (float64, error) {
	if err := vm.RunAll(); err != nil {
		return 0, fmt.Errorf("step %d: %w", step, err)
	}
	loss, err := read()
	if err != nil {
		return 0, err
	}
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return 0, fmt.Errorf("step %d: loss is %v", step, loss)
	}
	return loss, nil
}

// SolverStep sets solver's learning rate to lr, updates learn from their
// gradients and resets vm for the next step. Errors name the step.
func SolverStep(vm G.VM, solver G.Solver, learn G.Nodes, lr float64, step int) error {
	G.WithLearnRate(lr)(solver)
	if err := solver.Step(G.NodesToValueGrads(learn)); err != nil {
		return fmt.Errorf("step %d: solver: %w", step, err)
	}
	vm.Reset()
	return nil
}
