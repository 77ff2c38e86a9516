package trainutil

import (
	"fmt"
	"io"
	"math"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/train"
)

// Stepper runs an example's training steps: with train.Step, or as replays of a
// CUDA graph (train.GraphStep) when made with graph set.
type Stepper struct {
	vm    G.VM
	opt   *train.Adam
	learn G.Nodes
	gs    *train.GraphStep
}

// NewStepper returns the Stepper of vm, opt and learn; graph asks for CUDA graph
// replays (where they are not possible the steps run eagerly: see Reason).
func NewStepper(vm G.VM, opt *train.Adam, learn G.Nodes, graph bool) *Stepper {
	s := &Stepper{vm: vm, opt: opt, learn: learn}
	if graph {
		s.gs = train.NewGraphStep(vm, opt, learn)
	}
	return s
}

// Reason says why steps asked to replay a graph run eagerly ("" if they do not,
// or no graph was asked for).
func (s *Stepper) Reason() string { return s.gs.Reason() }

// Report writes Reason to out as a line of the run's report, if there is one.
func (s *Stepper) Report(out io.Writer) {
	if r := s.Reason(); r != "" {
		fmt.Fprintf(out, "-graph: the steps ran eagerly: %s\n", r)
	}
}

// Close frees the graph, if any.
func (s *Stepper) Close() error { return s.gs.Close() }

// Step runs training step step (0-based): it sets the optimiser's learning rate
// to lr, runs vm forward and backward and updates the weights in place, on the
// host or the GPU, and calls read (read the loss and other step outputs there,
// from the nodes' values: the GPU recycles an eager step's memory afterwards).
// It returns the loss that read yields, and an error naming the step when a run
// fails or the loss is NaN or infinite (an eager step then leaves the weights as
// they were).
func (s *Stepper) Step(lr float64, step int, read func() (float64, error)) (float64, error) {
	if s == nil || s.opt == nil || read == nil {
		return 0, fmt.Errorf("step %d: nil optimiser or read function", step)
	}
	s.opt.LR = lr
	var loss float64
	run := func(after func() error) error { return train.Step(s.vm, s.opt, s.learn, after) }
	if s.gs != nil {
		run = s.gs.Step
	}
	err := run(func() error {
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
