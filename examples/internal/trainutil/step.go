package trainutil

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/train"
)

// Step runs training step step (0-based) with train.Step: it sets opt's learning
// rate to lr, runs vm forward and backward, calls read between the run and the
// update (read the loss and other step outputs there: the GPU recycles the
// step's memory afterwards), then updates learn in place, on the host or the
// GPU. It returns the loss that read yields, and an error naming the step when
// a run fails or the loss is NaN or infinite (the weights are then left as
// they were).
func Step(vm G.VM, opt *train.Adam, learn G.Nodes, lr float64, step int, read func() (float64, error)) (float64, error) {
	if opt == nil || read == nil {
		return 0, fmt.Errorf("step %d: nil optimiser or read function", step)
	}
	opt.LR = lr
	var loss float64
	err := train.Step(vm, opt, learn, func() error {
		l, err := read()
		if err != nil {
			return err
		}
		if math.IsNaN(l) || math.IsInf(l, 0) {
			return fmt.Errorf("loss is %v", l)
		}
		loss = l
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("step %d: %w", step, err)
	}
	return loss, nil
}
