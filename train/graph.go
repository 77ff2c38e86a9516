package train

import (
	"errors"
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
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
// known: the weights live on the host, the solver is not *Adam or *SGD, or the capture failed
// (an op that waits for the device, such as the cuBLAS grouped GEMM that reads the plan's
// offsets). So do the steps after an input node of the weights' graph (a batch, a weight) is
// bound to another value than it had at the capture (G.Let of a new tensor): a replay would
// read the captured value's memory, and update it. A Release of the solver after the capture,
// or a LoadCheckpoint into it (which releases its state first: a roll-back, say), drops the
// graph, which reads the freed state: the next step runs eagerly and the one after is captured
// again. So does any step whose solver state is missing when it would be captured (a Release
// after the warm-up step, a new weight): the state is made eagerly, never inside a capture.
//
// Gradient clipping (MaxGradNorm) runs on the device in a captured step: the norm, the scale
// and the skip flag go to the solver's scalars, with the eager step's bits; a new MaxGradNorm
// takes effect at the next replay, but turning clipping on or off after the capture makes the
// later steps eager (Reason says so). A NaN or infinite norm, which fails an eager step with
// nothing updated, makes a replayed step change no weight or moment and sets
// kernels.StatusBadNorm, reported by the next call that checks the device status; the step
// still counts (Adam's bias corrections move on). GradNorm reads the norm from the device (it
// waits).
type GraphStep struct {
	vm     G.VM
	solver G.Solver
	params G.Nodes

	warm   bool           // the first, eager step has run
	clip   bool           // the captured step clips the gradient norm
	graph  device.Graph   // the captured step (nil before the capture)
	gs     graphSolver    // solver, once captured
	dev    device.Backend // the weights' device, once captured
	w0     *tensor.Dense  // the first weight, for dev's calls
	f32    string         // the first weight updated in float32, for the settings' checks
	reason string

	inputs G.Nodes   // the graph's input nodes at the capture (weights and batch)
	bound  []G.Value // their values then, which the graph reads and writes
	rel    int       // the solver's releases() at the capture
}

// NewGraphStep returns a GraphStep of vm, solver and params (as Step takes them).
func NewGraphStep(vm G.VM, solver G.Solver, params G.Nodes) *GraphStep {
	return &GraphStep{vm: vm, solver: solver, params: params}
}

// graphSolver is a solver whose device kernels can take the step's scalars from device memory.
type graphSolver interface {
	// nextScalars checks the solver's settings as its Step does (f32 names the first weight
	// updated in float32, "" for none) and writes the next step's scalars to the solver's
	// device buffer (made on dev's device on first use), from which its kernels then read them.
	nextScalars(dev device.Backend, like *tensor.Dense, f32 string) error
	// replayed counts a step that a replay took.
	replayed()
	// capturing makes the solver's kernels read the buffer's scalars (on) or their arguments.
	capturing(on bool)
	// clipping reports whether the solver clips the gradient norm (MaxGradNorm > 0): a step
	// captured with clipping reads each replay's max norm from the buffer, but whether it
	// clips at all is fixed by the capture.
	clipping() bool
	// saved returns a function that puts back what the solver's Step changes on the host
	// (Adam's step count, the last gradient norm and where it is read): a capture that fails
	// after the Step ran none of its kernels.
	saved() func()
	// releases counts the solver's Release calls (LoadCheckpoint makes one): each frees the
	// device state a captured step reads and updates.
	releases() int
	// stateReady reports whether the solver's Step on the weights of ps would make no state (moments,
	// master copies): made inside a capture, their zeroing or copying would be recorded and
	// run again by every replay.
	stateReady(ps []pair) bool
}

// captureEnd runs at the end of a capture, after the solver's Step (nil: nothing); tests make
// it fail (export_test.go).
var captureEnd func() error

// Reason is why the steps run eagerly ("" while they are captured or replayed, or before the
// second Step).
func (s *GraphStep) Reason() string {
	if s == nil {
		return ""
	}
	return s.reason
}

// Replaying reports whether the last Step was a graph replay.
func (s *GraphStep) Replaying() bool { return s != nil && s.graph != nil && s.reason == "" }

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
	switch {
	case s.reason != "" || !s.warm:
		err := Step(s.vm, s.solver, s.params, after)
		if err == nil {
			s.warm = true
		}
		return err
	case s.graph == nil && !s.stateReady():
		// The solver's state is missing (a Release or LoadCheckpoint since the warm-up step, a
		// new weight): make it eagerly first, and capture the step after.
		s.warm = false
		return s.Step(after)
	case s.graph == nil:
		var err error
		if s.reason, err = s.capture(); err != nil {
			return opkit.Wrap("train: GraphStep", err)
		}
		if s.reason != "" {
			return s.Step(after)
		}
		// The capture took the solver's step (its count); the replay runs it.
		if err := s.graph.Replay(); err != nil {
			return opkit.Wrap("train: GraphStep", err)
		}
	case s.gs.releases() != s.rel:
		// The solver's state was released after the capture (Release, or LoadCheckpoint: a
		// roll-back, say): the graph would read and update the freed moments and scalars. Drop
		// it; the next step runs eagerly (remaking the state outside any capture) and the one
		// after is captured again.
		err := s.graph.Close()
		s.graph, s.warm = nil, false
		if err != nil {
			return opkit.Wrap("train: GraphStep", err)
		}
		return s.Step(after)
	case s.gs.clipping() != s.clip:
		// Clipping was turned on or off after the capture: the graph has (or lacks) the
		// clipping kernels, so the steps from now on run eagerly.
		s.reason = "MaxGradNorm was turned on or off after the step was captured"
		return s.Step(after)
	case s.rebound() != "":
		// An input (a batch, a weight) was bound to another value after the capture: the graph
		// would read and update the captured value's memory, so the steps run eagerly.
		s.reason = s.rebound()
		return s.Step(after)
	default:
		if err := s.gs.nextScalars(s.dev, s.w0, s.f32); err != nil {
			return opkit.Wrap("train: GraphStep", err)
		}
		if err := s.graph.Replay(); err != nil {
			return opkit.Wrap("train: GraphStep", err)
		}
		s.gs.replayed()
	}
	if after != nil {
		return after()
	}
	return nil
}

// stateReady reports whether the solver's next Step makes no state (true for a solver with
// no graph step, or weights it cannot take: capture or Step says why). It looks at the
// weights alone: between steps their gradients may have no value yet, which check refuses.
func (s *GraphStep) stateReady() bool {
	gs, ok := s.solver.(graphSolver)
	if !ok {
		return true
	}
	ps := make([]pair, 0, len(s.params))
	for _, n := range s.params {
		var w *tensor.Dense
		if n != nil {
			w, _ = n.Value().(*tensor.Dense)
		}
		if w == nil {
			return true
		}
		ps = append(ps, pair{w: w, gpu: device.Of(w), n: w.Shape().TotalSize(), dtype: w.Dtype()})
	}
	return gs.stateReady(ps)
}

// capture captures the step, or says why it cannot.
func (s *GraphStep) capture() (reason string, err error) {
	gs, ok := s.solver.(graphSolver)
	var dev device.Backend
	var w0 *tensor.Dense
	var n0 *G.Node // the first weight that is not nil (params[0] was taken, and a nil one panicked)
	for _, n := range s.params {
		if n != nil {
			n0 = n
			break
		}
	}
	if n0 != nil {
		if w0, _ = n0.Value().(*tensor.Dense); w0 != nil {
			dev = device.Of(w0)
		}
	}
	switch {
	case dev == nil:
		return "the weights are not in GPU memory", nil
	case !ok:
		return fmt.Sprintf("the solver %T has no graph step (use *train.Adam or *train.SGD)", s.solver), nil
	}
	f32 := float32Params(s.params)
	if err := gs.nextScalars(dev, w0, f32); err != nil {
		return "", err
	}
	vgs := valueGrads(s.params)
	restore := gs.saved()
	gs.capturing(true)
	g, err := dev.Capture(w0, func() error {
		if err := s.vm.RunAll(); err != nil {
			return err
		}
		if err := s.solver.Step(vgs); err != nil {
			return err
		}
		if captureEnd != nil {
			return captureEnd()
		}
		return nil
	})
	gs.capturing(false)
	s.vm.Reset()
	if err != nil {
		restore()
		return fmt.Sprintf("capturing the step failed: %v", err), nil
	}
	s.graph, s.gs, s.dev, s.w0, s.clip, s.f32, s.rel = g, gs, dev, w0, gs.clipping(), f32, gs.releases()
	s.inputs = n0.Graph().Inputs()
	s.bound = make([]G.Value, len(s.inputs))
	for i, n := range s.inputs {
		s.bound[i] = n.Value()
	}
	return "", nil
}

// rebound names the first input node whose value is not the one it had at the capture ("" if
// none): G.Let of a new tensor, where the graph reads the captured one (device.Engine.Upload
// into the same tensor keeps the value).
func (s *GraphStep) rebound() string {
	for i, n := range s.inputs {
		if !sameValue(n.Value(), s.bound[i]) {
			return fmt.Sprintf("node %s was bound to another value after the step was captured (upload each batch into the same tensor with device.Engine.Upload)", n.Name())
		}
	}
	return ""
}

// sameValue reports whether a and b are the same value (the same *tensor.Dense, or the same
// host scalar); values of other types are taken as the same.
func sameValue(a, b G.Value) bool {
	switch x := a.(type) {
	case nil:
		return b == nil
	case *tensor.Dense:
		y, ok := b.(*tensor.Dense)
		return ok && x == y
	case *G.F64:
		y, ok := b.(*G.F64)
		return ok && x == y
	case *G.F32:
		y, ok := b.(*G.F32)
		return ok && x == y
	}
	return true
}

// Close destroys the graph and frees its device memory; the node values bound during the
// capture must not be used after. Later Steps run eagerly. Close it when the training is over
// (a Release of the solver alone only makes the next Step drop the graph).
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
// its kernels take the scalars as arguments): the solver's scalars, then three that a clipped
// step's kernels write (skip, norm, scale; kernels.CUDA.ClipFinish) and the max norm they read.
type graphScalars struct {
	dev       device.Backend
	buf       any
	on        bool // the kernels read buf
	normOnDev int  // 1 + the index of the last norm in buf, 0 when it is on the host
	releases  int  // the solver's Release calls (GraphStep drops a graph captured before one)
}

// clip clips the gradients of ps to maxNorm (0: none) and returns the norm. While the kernels
// read the buffer (a step being captured) it clips on the device without waiting
// (device.Backend.ClipGrads, with the bits of the eager clip), writing skip, norm and scale at
// at, and returns NaN: norm then reads the norm from the device.
func (g *graphScalars) clip(ps []pair, maxNorm float64, at int) (float64, error) {
	g.normOnDev = 0
	if !g.on || maxNorm == 0 {
		return clip(ps, maxNorm)
	}
	gs := make([]*tensor.Dense, len(ps))
	for i, p := range ps {
		if p.gpu == nil {
			return math.NaN(), fmt.Errorf("clipping a captured step: the gradient of %s is not in GPU memory", p.wLabel)
		}
		if p.sharesGrad { // the device clip would scale it once per weight
			return math.NaN(), fmt.Errorf("clipping a captured step: %s shares its gradient buffer with an earlier weight (clip the eager step instead)", p.wLabel)
		}
		gs[i] = p.g
	}
	if err := ps[0].gpu.ClipGrads(gs, g.buf, at); err != nil { // the max norm is at+3 (nextScalars)
		return math.NaN(), fmt.Errorf("clipping a captured step: %w", err)
	}
	g.normOnDev = at + 2
	return math.NaN(), nil
}

// norm is the last step's gradient norm: host, or the device's when the step clipped there
// (a replayed step; reading it waits for the device).
func (g *graphScalars) norm(host float64) float64 {
	if g.normOnDev == 0 || g.buf == nil {
		return host
	}
	v, ok := g.buf.(G.Value)
	if !ok {
		return math.NaN()
	}
	h, err := g.dev.Download(v)
	if err != nil {
		return math.NaN()
	}
	return h.Float64s()[g.normOnDev-1]
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
	g.releases++
}

func (a *Adam) nextScalars(dev device.Backend, like *tensor.Dense, f32 string) error {
	if err := a.countErr(); err != nil {
		return err
	}
	// As Step checks them: a replay takes whatever the buffer holds, and a NaN rate or a β of
	// 1 set after the capture would otherwise reach every weight, and so would a rate that
	// overflows float32.
	if err := adamSettings(f32, a.LR, a.Beta1, a.Beta2, a.Eps, a.WeightDecay, a.MaxGradNorm); err != nil {
		return opkit.Wrap("train: Adam", err)
	}
	c1, c2 := a.corrections(a.t + 1)
	return a.gsc.set(dev, like, []float64{a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay, 0, 0, 1, a.MaxGradNorm})
}

func (a *Adam) replayed() { a.t++ }

func (a *Adam) releases() int { return a.gsc.releases }

func (a *Adam) stateReady(ps []pair) bool { return len(missingState(a.state, ps, true)) == 0 }

func (a *Adam) saved() func() {
	t, norm, at := a.t, a.norm, a.gsc.normOnDev
	return func() { a.t, a.norm, a.gsc.normOnDev = t, norm, at }
}

func (a *Adam) capturing(on bool) { a.gsc.on = on }

func (a *Adam) clipping() bool { return a.MaxGradNorm > 0 }

func (s *SGD) nextScalars(dev device.Backend, like *tensor.Dense, f32 string) error {
	if err := sgdSettings(f32, s.LR, s.WeightDecay, s.MaxGradNorm); err != nil {
		return opkit.Wrap("train: SGD", err)
	}
	return s.gsc.set(dev, like, []float64{s.LR, s.WeightDecay, 0, 0, 1, s.MaxGradNorm})
}

func (s *SGD) replayed() {}

func (s *SGD) releases() int { return s.gsc.releases }

func (s *SGD) stateReady(ps []pair) bool { return len(missingState(s.state, ps, false)) == 0 }

func (s *SGD) saved() func() {
	norm, at := s.norm, s.gsc.normOnDev
	return func() { s.norm, s.gsc.normOnDev = norm, at }
}

func (s *SGD) capturing(on bool) { s.gsc.on = on }

func (s *SGD) clipping() bool { return s.MaxGradNorm > 0 }

// float32Params names the first of params whose value is a float32 or bfloat16 tensor, as
// Step's check labels it ("weight 0 (w)"): its update runs in float32 (see fitsFloat32); ""
// when there is none.
func float32Params(params G.Nodes) string {
	for i, n := range params {
		if n == nil {
			continue
		}
		if d, ok := n.Value().(*tensor.Dense); ok && d != nil && inFloat32(d.Dtype()) {
			return fmt.Sprintf("weight %d (%s)", i, n.Name())
		}
	}
	return ""
}
