package train

import (
	"errors"
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
)

// GraphStep runs training steps on the GPU as replays of one CUDA graph: the first Step runs
// eagerly (Step), which makes the caching pool's blocks, the optimiser's state and the grouped
// GEMMs' parameters; the second captures the whole step (forward, backward, the solver's
// update) into a graph and replays it; every later Step only writes the solver's scalars for
// the step (learning rate, Adam's bias corrections) to device memory and replays the graph,
// one launch with no host work per op. A replayed step gives the bits of the eager step.
//
// It needs static shapes and inputs that live in device memory the graph reads: upload each
// step's batch into the same device tensors (device.Engine.Upload) before Step. The node
// values bound during the capture (the loss node's Value, say) are rewritten by every replay:
// read them in after, for example with Scalar. G.Read targets need the care Step describes
// (nil before each step) until the capture; a replay runs no read, so a target filled by the
// capture keeps pointing at memory that every replay rewrites.
//
// Where a step cannot be captured it runs every step eagerly instead and Reason says why, once
// known: the weights live on the host, the solver is not *Adam or *SGD, gradient clipping is
// on (it reads the norm on the host), or the capture failed (an op that waits for the device,
// such as the cuBLAS grouped GEMM that reads the plan's offsets).
type GraphStep struct {
	vm     G.VM
	solver G.Solver
	params G.Nodes

	steps  int
	graph  device.Graph
	reason string
}

// NewGraphStep returns a GraphStep of vm, solver and params (as Step takes them).
func NewGraphStep(vm G.VM, solver G.Solver, params G.Nodes) *GraphStep {
	return &GraphStep{vm: vm, solver: solver, params: params}
}

// graphSolver is a solver whose device kernels can take the step's scalars from device memory.
type graphSolver interface {
	// graphBlocker says why the solver's step cannot be captured ("" if it can).
	graphBlocker() string
	// nextScalars writes the next step's scalars to the solver's device buffer (made on dev's
	// device on first use), from which its kernels then read them.
	nextScalars(dev device.Backend, like *tensor.Dense) error
	// replayed counts a step that a replay took.
	replayed()
	// capturing makes the solver's kernels read the buffer's scalars (on) or their arguments.
	capturing(on bool)
}

// Reason is why the steps run eagerly ("" while they are captured or replayed, or before the
// second Step).
func (s *GraphStep) Reason() string {
	if s == nil {
		return ""
	}
	return s.reason
}

// Replaying reports whether the last Step was a graph replay.
func (s *GraphStep) Replaying() bool { return s != nil && s.graph != nil }

// Nodes is the number of device operations in the captured step (0 before the capture).
func (s *GraphStep) Nodes() int {
	if s == nil || s.graph == nil {
		return 0
	}
	return s.graph.Nodes()
}

// Step takes one training step and then runs after (nil: nothing), where the step's values
// can be read: the cost node's Value, for example, with Scalar. (Unlike Step's after, it runs
// after the update of a replayed step.)
func (s *GraphStep) Step(after func() error) error {
	if s == nil || s.vm == nil || s.solver == nil {
		return errors.New("gomoe: train: GraphStep: nil machine or solver")
	}
	if s.reason != "" || s.steps == 0 {
		err := Step(s.vm, s.solver, s.params, after)
		if err == nil {
			s.steps++
		}
		return err
	}
	gs, ok := s.solver.(graphSolver)
	var dev device.Backend
	var w0 *tensor.Dense
	if len(s.params) > 0 {
		w0, _ = s.params[0].Value().(*tensor.Dense)
		if w0 != nil {
			dev = device.Of(w0)
		}
	}
	if s.graph == nil {
		switch {
		case dev == nil:
			s.reason = "the weights are not in GPU memory"
		case !ok:
			s.reason = fmt.Sprintf("the solver %T has no graph step (use *train.Adam or *train.SGD)", s.solver)
		case gs.graphBlocker() != "":
			s.reason = gs.graphBlocker()
		}
		if s.reason != "" {
			return s.Step(after)
		}
		if err := gs.nextScalars(dev, w0); err != nil {
			return fmt.Errorf("gomoe: train: GraphStep: %w", err)
		}
		vgs := make([]G.ValueGrad, len(s.params))
		for i, p := range s.params {
			vgs[i] = p
		}
		gs.capturing(true)
		g, err := dev.Capture(w0, func() error {
			if err := s.vm.RunAll(); err != nil {
				return err
			}
			return s.solver.Step(vgs)
		})
		gs.capturing(false)
		s.vm.Reset()
		if err != nil {
			s.reason = fmt.Sprintf("capturing the step failed: %v", err)
			return s.Step(after)
		}
		s.graph = g
	} else if err := gs.nextScalars(dev, w0); err != nil {
		return fmt.Errorf("gomoe: train: GraphStep: %w", err)
	} else {
		defer gs.replayed()
	}
	if err := s.graph.Replay(); err != nil {
		return fmt.Errorf("gomoe: train: GraphStep: %w", err)
	}
	s.steps++
	if after != nil {
		if err := after(); err != nil {
			return err
		}
	}
	return nil
}

// Close destroys the graph and frees its device memory; the node values bound during the
// capture must not be used after. Later Steps run eagerly. Close it before the solver's
// Release: the graph reads and writes the solver's state.
func (s *GraphStep) Close() error {
	if s == nil || s.graph == nil {
		return nil
	}
	err := s.graph.Close()
	s.graph = nil
	if s.reason == "" {
		s.reason = "closed"
	}
	return err
}

// graphScalars is an optimiser's device buffer of step scalars for graph replays (nil buf:
// its kernels take the scalars as arguments).
type graphScalars struct {
	dev device.Backend
	buf any
	on  bool // the kernels read buf
}

// arg is what the kernels get: the buffer while capturing, else nil.
func (g *graphScalars) arg() any {
	if g.on {
		return g.buf
	}
	return nil
}

// set writes vals to the buffer, making it on dev's device first.
func (g *graphScalars) set(dev device.Backend, like *tensor.Dense, vals []float64) error {
	if g.buf == nil {
		b, err := dev.Scalars(like, len(vals))
		if err != nil {
			return err
		}
		g.dev, g.buf = dev, b
	}
	return g.dev.SetScalars(g.buf, vals)
}

func (g *graphScalars) release() {
	if g.buf != nil {
		g.dev.Release(g.buf)
	}
	g.dev, g.buf = nil, nil
}

func (a *Adam) graphBlocker() string {
	if a.MaxGradNorm > 0 {
		return "gradient clipping reads the gradient norm on the host"
	}
	return ""
}

func (a *Adam) nextScalars(dev device.Backend, like *tensor.Dense) error {
	c1, c2 := a.corrections(a.t + 1)
	return a.gsc.set(dev, like, []float64{a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay})
}

func (a *Adam) replayed() { a.t++ }

func (a *Adam) capturing(on bool) { a.gsc.on = on }

func (s *SGD) graphBlocker() string {
	if s.MaxGradNorm > 0 {
		return "gradient clipping reads the gradient norm on the host"
	}
	return ""
}

func (s *SGD) nextScalars(dev device.Backend, like *tensor.Dense) error {
	return s.gsc.set(dev, like, []float64{s.LR, s.WeightDecay})
}

func (s *SGD) replayed() {}

func (s *SGD) capturing(on bool) { s.gsc.on = on }
