package trainutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/train"
)

// LoopConfig is the part of an example's configuration that its training loop shares with
// the other examples: the optimiser's schedule and clipping, and checkpointing. Embed it in
// the example's config.
type LoopConfig struct {
	LR        float64 // peak Adam learning rate
	LRFloor   float64 // final learning rate as a fraction of LR (cosine decay)
	Warmup    int     // learning-rate warmup steps
	Clip      float64 // global gradient-norm clipping (0: none)
	Save      string  // folder to save the checkpoint in ("": none)
	SaveEvery int     // steps between checkpoints (0: only at the end)
	Resume    string  // folder of a checkpoint to resume from ("": start afresh)
	StopAt    int     // stop after this step (0: run all steps), to resume later
	Graph     bool    // replay the training step as a CUDA graph (train.GraphStep; GPU only)

	// RunFlags are the example's flags that a resumed run must repeat (they shape the model,
	// the data order, the losses or the state the checkpoint carries, such as -log-every, the
	// windows of the saved load trackers: see Session.CarryLoad), as "-name value" pairs
	// separated by spaces; not a flag, the example sets it. -lr, -lr-floor and -warmup are added
	// to them.
	RunFlags string
	// DataID is a fingerprint of the data the run trains and evaluates on (see Fingerprint;
	// not a flag, the example sets it when Checkpoints says so; "": not checked): a resumed run
	// on other data (other files, or another share of them) is an error; the same data in
	// another folder is not.
	DataID string
}

// Checkpoints reports whether the run saves or resumes a checkpoint (-save or -resume), the
// only runs that need DataID: hashing the data costs a full pass over it.
func (c LoopConfig) Checkpoints() bool { return c.Save != "" || c.Resume != "" }

// AddFlags registers on fs the flags that set c's fields (-lr, -lr-floor, -warmup, -clip,
// -save, -save-every, -resume, -stop-at), with c's current values as defaults. length names
// the flags that set the run's length (for -resume's help text).
func (c *LoopConfig) AddFlags(fs *flag.FlagSet, length string) {
	fs.Float64Var(&c.LR, "lr", c.LR, "peak Adam learning rate")
	fs.Float64Var(&c.LRFloor, "lr-floor", c.LRFloor, "final learning rate as a fraction of -lr (cosine decay)")
	fs.IntVar(&c.Warmup, "warmup", c.Warmup, "learning-rate warmup steps (linear, before the cosine decay)")
	fs.Float64Var(&c.Clip, "clip", c.Clip, "clip the global gradient norm to this value (0: no clipping)")
	fs.StringVar(&c.Save, "save", c.Save, "save a checkpoint (weights, Adam state, data order) in this folder at the end of the run")
	fs.IntVar(&c.SaveEvery, "save-every", c.SaveEvery, "with -save, also save every this many steps")
	fs.StringVar(&c.Resume, "resume", c.Resume, "resume the run saved in this folder (same flags; "+length+" is the whole run's length)")
	fs.IntVar(&c.StopAt, "stop-at", c.StopAt, "stop after this step (with -save, to -resume later)")
	fs.BoolVar(&c.Graph, "graph", c.Graph, "with -device cuda, capture the training step once as a CUDA graph and replay it (train.GraphStep; same results)")
}

// Validate reports the first bad field of c, or nil, naming its flag (as IntFlag and
// FloatFlag do).
func (c LoopConfig) Validate() error {
	const big = 1 << 30
	if err := FirstError(
		FloatFlag("lr", c.LR, 0, math.MaxFloat32, true),
		FloatFlag("lr-floor", c.LRFloor, 0, 1, false),
		IntFlag("warmup", c.Warmup, 0, big),
		IntFlag("save-every", c.SaveEvery, 0, big),
		IntFlag("stop-at", c.StopAt, 0, big),
		FloatFlag("clip", c.Clip, 0, math.Inf(1), false),
	); err != nil {
		return err
	}
	if c.SaveEvery > 0 && c.Save == "" {
		return fmt.Errorf("-save-every %d: needs -save (the folder to save in)", c.SaveEvery)
	}
	// The examples' weights are float32, whose update takes the rate in float32 (train.Adam
	// refuses one that rounds to 0 there): the smallest rates of the schedule, its first warmup
	// step and its floor, must not (they failed at that step, after data and files).
	for _, r := range []struct {
		what string
		lr   float64
	}{
		{"-lr", c.LR},
		{"the first warmup step's -lr / -warmup", c.LR / float64(max(c.Warmup, 1))},
		{"the floor -lr × -lr-floor", c.LR * c.LRFloor},
	} {
		if r.lr != 0 && float32(r.lr) == 0 {
			return fmt.Errorf("-lr %g: %s, %g, rounds to 0 in float32 (the weights would not move)", c.LR, r.what, r.lr)
		}
	}
	return nil
}

// Optimizer returns Adam at the peak learning rate with c's clipping, and the cosine
// schedule of a run of steps steps.
func (c LoopConfig) Optimizer(steps int) (*train.Adam, train.Cosine, error) {
	sched := train.Cosine{Peak: c.LR, Floor: c.LRFloor, Warmup: c.Warmup, Total: steps}
	if err := sched.Validate(); err != nil {
		return nil, sched, err
	}
	opt := train.NewAdam(c.LR)
	opt.MaxGradNorm = c.Clip
	return opt, sched, nil
}

// Last returns the number of steps done when a run of steps steps stops: StopAt if it is
// before the end, else steps.
func (c LoopConfig) Last(steps int) int {
	if c.StopAt > 0 && c.StopAt < steps {
		return c.StopAt
	}
	return steps
}

// ResumeRun loads the run saved in c.Resume, if any, into learn, opt, sources and state (see
// Run.State; nil: none), reports it on out (with a note when the saved run had another length
// than steps) and returns the step to go on from: 0 without c.Resume. opt keeps c.Clip: the
// flags of this run win over the saved constants.
func (c LoopConfig) ResumeRun(out io.Writer, learn G.Nodes, opt *train.Adam, steps int, sources map[string]*rand.PCG, state map[string]string) (int, error) {
	if c.Resume == "" {
		return 0, nil
	}
	first, saved, err := LoadRun(c.Resume, learn, opt, Run{Sources: sources, Flags: c.runFlags(), Data: c.DataID, State: state})
	if err != nil {
		return 0, err
	}
	opt.MaxGradNorm = c.Clip // this run's -clip, not the saved run's
	fmt.Fprintf(out, "resumed from %s at step %d of %d\n", c.Resume, first, saved)
	if saved != steps {
		fmt.Fprintf(out, "note: the checkpoint's run had %d steps, this one %d: the learning-rate schedule differs from the saved run's\n", saved, steps)
	}
	return first, nil
}

// runFlags returns the flags a resumed run must repeat: -lr, -lr-floor, -warmup and RunFlags.
func (c LoopConfig) runFlags() string {
	return strings.TrimSpace(fmt.Sprintf("-lr %g -lr-floor %g -warmup %d %s", c.LR, c.LRFloor, c.Warmup, c.RunFlags))
}

// SaveDue reports whether a checkpoint is due after step (0-based) of a run that stops
// after last steps, before the final one that SaveRun writes at the end.
func (c LoopConfig) SaveDue(step, last int) bool {
	return c.SaveEvery > 0 && (step+1)%c.SaveEvery == 0 && step+1 != last
}

// SaveRun writes learn, opt and r to c.Save, if set, and logs it on prog.
func (c LoopConfig) SaveRun(prog *train.Progress, learn G.Nodes, opt *train.Adam, r Run) error {
	if c.Save == "" {
		return nil
	}
	if err := SaveRun(c.Save, learn, opt, r); err != nil {
		return err
	}
	prog.Logf("step %5d  saved %s", r.Step, filepath.Join(c.Save, CheckpointFile))
	return nil
}

// Session is the checkpointing and progress report of one training loop, from StartRun:
// the loop runs steps First to Last-1 (0-based), calls Checkpoint after each and End after
// the last, and Close when it returns.
//
// An interrupt (Ctrl-C) or SIGTERM during the loop stops it after the step it is in:
// Checkpoint then saves the run (with -save) and returns an error that says where the
// checkpoint is (or that none was saved). A second interrupt ends the program at once.
type Session struct {
	First, Last int             // the steps to run: from the resumed step to the stop
	Prog        *train.Progress // the progress report of those steps

	c     LoopConfig
	learn G.Nodes
	opt   *train.Adam
	steps int
	src   map[string]*rand.PCG
	state map[string]string
	load  []*train.LoadTracker // CarryLoad's trackers, saved in state as "load.N"
	intr  *interrupts          // from StartRun to Close
}

// StartRun resumes the run saved in c.Resume, if any, into learn, opt, sources and state (as
// ResumeRun, reporting it on out; the loop keeps state up to date, each checkpoint saves it),
// and starts the progress report of the steps left (batch items counted as unit a step; the
// bar on bar, log lines on out) of a run of steps steps.
func (c LoopConfig) StartRun(out, bar io.Writer, learn G.Nodes, opt *train.Adam, steps int, sources map[string]*rand.PCG, state map[string]string, batch int, unit string) (*Session, error) {
	if state == nil {
		state = map[string]string{} // the session's own (CarryLoad)
	}
	first, err := c.ResumeRun(out, learn, opt, steps, sources, state)
	if err != nil {
		return nil, err
	}
	last := c.Last(steps)
	if first > last {
		// Running nothing and saving would label the checkpoint's weights with an earlier step.
		return nil, fmt.Errorf("the checkpoint in %s is at step %d, past this run's end at step %d (-steps %d, -stop-at %d): nothing to run", c.Resume, first, last, steps, c.StopAt)
	}
	if c.Save != "" {
		// Found out now, not after the training, when the first checkpoint is written.
		if err := WritableDir("save", c.Save); err != nil {
			return nil, err
		}
	}
	prog := train.NewProgress(bar, out, int64(max(last-first, 0)*batch), unit, "train")
	return &Session{First: first, Last: last, Prog: prog, c: c, learn: learn, opt: opt, steps: steps, src: sources, state: state, intr: watchInterrupts()}, nil
}

// WritableDir makes the folder dir of the flag -name and checks that a file can be created in
// it, so that a folder that cannot be written is an error naming the flag before the training,
// not when the first file is written after it.
func WritableDir(name, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("-%s: %w", name, err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("-%s %s: the folder cannot be written: %w", name, dir, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// CarryLoad makes the load trackers lts part of the run's saved state: each checkpoint saves
// them (train.LoadTracker's JSON, as state "load.N"), and a resumed run's trackers go on from
// the saved ones, so that its load log, whole-run shares, drops and plot are the unbroken
// run's. Call it before the loop; a nil tracker is skipped.
func (s *Session) CarryLoad(lts ...*train.LoadTracker) error {
	s.load = lts
	for i, lt := range lts {
		v, ok := s.state[fmt.Sprintf("load.%d", i)]
		if !ok || lt == nil {
			continue
		}
		var saved train.LoadTracker
		if err := saved.UnmarshalJSON([]byte(v)); err != nil {
			return fmt.Errorf("resume from %s: load tracker %d: %w", s.c.Resume, i, err)
		}
		if got, want := saved.Experts(), lt.Experts(); got != want {
			return fmt.Errorf("resume from %s: load tracker %d has %d experts, this run's %d", s.c.Resume, i, got, want)
		}
		*lt = saved
	}
	return nil
}

// Close stops catching interrupts: call it when the loop's run returns.
func (s *Session) Close() { s.intr.stop() }

// Checkpoint saves the run after step (0-based) when -save-every makes a checkpoint due
// there (SaveDue), or when an interrupt came: then it returns an error saying so.
func (s *Session) Checkpoint(step int) error {
	if sg, ok := s.intr.caught(); ok {
		return s.interrupted(sg, step+1)
	}
	if !s.c.SaveDue(step, s.Last) {
		return nil
	}
	return s.save(step + 1)
}

// interrupted saves the run after done steps (with -save) and returns the error that ends it.
func (s *Session) interrupted(sg os.Signal, done int) error {
	if s.c.Save == "" {
		return fmt.Errorf("interrupted (%v) after step %d of %d; no checkpoint saved (no -save)", sg, done, s.steps)
	}
	if err := s.save(done); err != nil {
		return fmt.Errorf("interrupted (%v) after step %d of %d; saving the checkpoint failed: %w", sg, done, s.steps, err)
	}
	return fmt.Errorf("interrupted (%v) after step %d of %d; saved %s (go on with the same flags and -resume %s)", sg, done, s.steps, filepath.Join(s.c.Save, CheckpointFile), s.c.Save)
}

// End saves the run at its stop (with -save), after the last step, and stops catching
// interrupts: from then on (the final evaluation, a sample, the plots) Ctrl-C ends the program.
func (s *Session) End() error {
	defer s.Close()
	return s.save(s.Last)
}

func (s *Session) save(done int) error {
	for i, lt := range s.load {
		if lt == nil {
			continue
		}
		b, err := lt.MarshalJSON()
		if err != nil {
			return fmt.Errorf("saving load tracker %d: %w", i, err)
		}
		s.state[fmt.Sprintf("load.%d", i)] = string(b)
	}
	return s.c.SaveRun(s.Prog, s.learn, s.opt, Run{Step: done, Steps: s.steps, Sources: s.src, Flags: s.c.runFlags(), Data: s.c.DataID, State: s.state})
}

// ShareWeights makes the nodes dst (an evaluation copy of a model) use the values of src
// (the trained model's learnables, in the same order), so that they follow the training
// updates in place, on the host or the GPU.
func ShareWeights(dst, src G.Nodes) error {
	if len(dst) != len(src) {
		return errors.New("the copy of the model has other learnables than the trained model")
	}
	for i, n := range dst {
		if err := G.Let(n, src[i].Value()); err != nil {
			return fmt.Errorf("share %s: %w", n.Name(), err)
		}
	}
	return nil
}
