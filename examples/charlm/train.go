package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/train"
)

// config holds everything a run depends on.
type config struct {
	Block                trainutil.BlockConfig
	trainutil.LoopConfig     // LR, schedule, clipping and checkpoints (-lr, -warmup, -clip, -save, -resume, ...)
	Layers               int // MoE feed-forward blocks
	Context              int // characters of context W
	Embed                int // embedding size per character D
	Steps                int // training steps
	Batch                int // mini-batch size
	EvalBatch            int // rows per evaluation batch
	EvalChars            int // held-out characters scored
	Seed                 uint64
	Out                  string
	GoRoot               string // "" = this Go installation
	TrainMB              float64
	HeldMB               float64
	LogEvery             int
	EvalEvery            int // steps between held-out evaluations (0 = only at the end)
	Sample               int // characters to generate
	Prompt               string
	Temp                 float64
	Device               string // cpu or cuda (cuda needs a binary built with -tags gomoecuda)
	Quiet                bool
}

func defaultConfig() config {
	return config{
		Block:      trainutil.DefaultBlockConfig(),
		Layers:     2,
		Context:    8,
		Embed:      32,
		Steps:      2500,
		Batch:      256,
		EvalBatch:  1000,
		EvalChars:  50000,
		LoopConfig: trainutil.LoopConfig{LR: 6e-3, LRFloor: 0.05},
		Seed:       1,
		Out:        "out/charlm",
		TrainMB:    4,
		HeldMB:     0.5,
		LogEvery:   250,
		EvalEvery:  500,
		Sample:     400,
		Prompt:     "func (b *Buffer) ",
		Temp:       0.7,
		Device:     "cpu",
	}
}

// result is what a run measured.
type result struct {
	StepLoss  []float64 // training cross-entropy per step, in nats
	BPC       float64   // model bits per character on held-out text
	Unigram   float64   // unigram baseline bits per character
	Bigram    float64   // bigram baseline bits per character
	Sample    string
	Elapsed   time.Duration
	Files     []string
	TrainSize int
	HeldSize  int
}

// model: embed W characters, concatenate, project to H (ReLU), then Layers
// pre-norm residual MoE feed-forward blocks h += MoE(RMSNorm(h)), then
// RMSNorm and a linear read-out over the vocabulary.
type model struct {
	batch  int
	x, y   *G.Node // context symbols [B·W] (int32), one-hot next char [B, V]
	emb    *G.Node // [V, D]
	proj   *trainutil.Linear
	norms  []*trainutil.RMSNorm // one before each block and one before the head
	blocks []trainutil.Block
	outs   []trainutil.BlockOut
	head   *trainutil.Linear
	logits *G.Node
	ce     *G.Node
	cost   *G.Node // ce + the blocks' weighted routing losses
}

func newModel(g *G.ExprGraph, cfg config, batch int) (*model, error) {
	ini := train.NewInit(cfg.Seed)
	W, D, H := cfg.Context, cfg.Embed, cfg.Block.Hidden
	m := &model{
		batch: batch,
		x:     G.NewVector(g, tensor.Int32, G.WithShape(batch*W), G.WithName("x")),
		y:     G.NewMatrix(g, tensor.Float32, G.WithShape(batch, vocab), G.WithName("y")),
	}
	var err error
	if m.emb, err = trainutil.Param(g, ini, "emb", vocab, D, 1); err != nil {
		return nil, err
	}
	if m.proj, err = trainutil.NewLinear(g, ini, "proj", W*D, H, math.Sqrt2); err != nil {
		return nil, err
	}
	for l := 0; l < cfg.Layers; l++ {
		bc := cfg.Block
		bc.Seed = cfg.Seed + 100 + uint64(l)
		m.norms = append(m.norms, trainutil.NewRMSNorm(g, fmt.Sprintf("norm%d", l), H))
		b, err := trainutil.NewBlock(g, fmt.Sprintf("moe%d", l), bc)
		if err != nil {
			return nil, err
		}
		m.blocks = append(m.blocks, b)
	}
	m.norms = append(m.norms, trainutil.NewRMSNorm(g, "norm_out", H))
	if m.head, err = trainutil.NewLinear(g, ini, "head", H, vocab, 1); err != nil {
		return nil, err
	}

	e, err := op.Embedding(m.emb, m.x) // [B·W, D]
	if err != nil {
		return nil, err
	}
	if e, err = G.Reshape(e, tensor.Shape{batch, W * D}); err != nil {
		return nil, err
	}
	h, err := m.proj.Forward(e)
	if err != nil {
		return nil, err
	}
	if h, err = op.ReLU(h); err != nil {
		return nil, err
	}
	var aux G.Nodes
	for l, b := range m.blocks {
		hn, err := m.norms[l].Forward(h)
		if err != nil {
			return nil, err
		}
		o, err := b.Forward(hn)
		if err != nil {
			return nil, err
		}
		m.outs = append(m.outs, o)
		if h, err = G.Add(h, o.Y); err != nil {
			return nil, err
		}
		aux = append(aux, o.Loss)
	}
	if h, err = m.norms[len(m.blocks)].Forward(h); err != nil {
		return nil, err
	}
	if m.logits, err = m.head.Forward(h); err != nil {
		return nil, err
	}
	if m.ce, err = trainutil.CrossEntropy(m.logits, m.y); err != nil {
		return nil, err
	}
	// op.AddScalars, not G.Add: Gorgonia adds scalar nodes on the host only.
	if m.cost, err = op.AddScalars(append(G.Nodes{m.ce}, aux...)...); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *model) learnables() G.Nodes {
	ns := G.Nodes{m.emb}
	ns = append(ns, m.proj.Learnables()...)
	for l, b := range m.blocks {
		ns = append(ns, m.norms[l].Learnables()...)
		ns = append(ns, b.Learnables()...)
	}
	ns = append(ns, m.norms[len(m.blocks)].Learnables()...)
	return append(ns, m.head.Learnables()...)
}

// batchBuf holds the input tensors of one graph and feeds them to its nodes
// (on the GPU through device buffers refreshed every step).
type batchBuf struct {
	w      int
	xb     []int32
	yb     []float32
	xf, yf *trainutil.Feed
}

func newBatchBuf(dev *trainutil.Device, m *model, w int) (*batchBuf, error) {
	batch := m.batch
	b := &batchBuf{w: w, xb: make([]int32, batch*w), yb: make([]float32, batch*vocab)}
	var err error
	if b.xf, err = dev.Feed(m.x, tensor.New(tensor.WithShape(batch*w), tensor.WithBacking(b.xb))); err != nil {
		return nil, err
	}
	if b.yf, err = dev.Feed(m.y, tensor.New(tensor.WithShape(batch, vocab), tensor.WithBacking(b.yb))); err != nil {
		return nil, err
	}
	return b, nil
}

// fill writes, for each row r, the context text[pos[r]-W:pos[r]] and the
// target text[pos[r]] (none when pos[r] is len(text)). Rows past len(pos)
// are zero.
func (b *batchBuf) fill(text []uint8, pos []int) {
	clear(b.xb)
	clear(b.yb)
	for r, p := range pos {
		for j := 0; j < b.w; j++ {
			b.xb[r*b.w+j] = int32(text[p-b.w+j])
		}
		if p < len(text) { // generation asks for the char after the text
			b.yb[r*vocab+int(text[p])] = 1
		}
	}
}

// load makes the graph see the buffers' current contents.
func (b *batchBuf) load() error {
	if err := b.xf.Load(); err != nil {
		return err
	}
	return b.yf.Load()
}

func validate(cfg config) error {
	const big = 1 << 30
	inf := math.Inf(1)
	if err := trainutil.FirstError(
		cfg.Block.Validate(),
		cfg.LoopConfig.Validate(),
		trainutil.IntFlag("layers", cfg.Layers, 1, 1<<10),
		trainutil.IntFlag("context", cfg.Context, 1, 1<<16),
		trainutil.IntFlag("embed", cfg.Embed, 1, 1<<16),
		trainutil.IntFlag("steps", cfg.Steps, 1, big),
		trainutil.IntFlag("batch", cfg.Batch, 1, 1<<24),
		trainutil.IntFlag("eval batch", cfg.EvalBatch, 1, 1<<24),
		trainutil.IntFlag("eval-chars", cfg.EvalChars, 1, big),
		trainutil.IntFlag("eval-every", cfg.EvalEvery, 0, big),
		trainutil.IntFlag("log-every", cfg.LogEvery, 1, big),
		trainutil.IntFlag("sample", cfg.Sample, 0, 1<<24),
		trainutil.FloatFlag("train-mb", cfg.TrainMB, 0, 1e6, true), // int(MB·1e6) must not wrap
		trainutil.FloatFlag("held-mb", cfg.HeldMB, 0, 1e6, true),
		trainutil.FloatFlag("temp", cfg.Temp, 0, inf, true),
	); err != nil {
		return err
	}
	if cfg.Out == "" {
		return errors.New("-out: empty output folder")
	}
	// All the blocks' weights, with their gradients and Adam's two moments, before any block
	// is built (each checks only its own: the blocks were all made before the model's check).
	wb, err := cfg.Block.WeightBytes()
	if err != nil {
		return err
	}
	return hostmem.Check(fmt.Sprintf("-layers %d of %s blocks %s (their weights, gradients and Adam moments)", cfg.Layers, cfg.Block.Name(), cfg.Block.Shape()), 4*float64(cfg.Layers)*wb)
}

// run trains the model, evaluates it against the baselines, prints its
// report to out and draws the progress bar on bar (nil: no bar).
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
	c, err := loadCorpus(cfg.GoRoot, int(cfg.TrainMB*1e6), int(cfg.HeldMB*1e6), cfg.Seed)
	if err != nil {
		return nil, err
	}
	W := cfg.Context
	if len(c.train) <= W+cfg.Batch {
		return nil, fmt.Errorf("corpus too small: %d training characters, want more than -context %d plus -batch %d", len(c.train), W, cfg.Batch)
	}
	if len(c.held) <= W+1 {
		return nil, fmt.Errorf("corpus too small: %d held-out characters, want more than -context %d plus 1", len(c.held), W)
	}
	if err := trainutil.WritableDir("out", cfg.Out); err != nil { // found out before the training
		return nil, err
	}
	// Held-out positions scored by every model: the first EvalChars
	// symbols that have a full context.
	evalFrom, evalTo := W, min(len(c.held), W+cfg.EvalChars)
	res := &result{TrainSize: len(c.train), HeldSize: evalTo - evalFrom}
	ng := newNgram(c.train)
	res.Unigram, res.Bigram = ng.bits(c.held, evalFrom, evalTo)

	kind := fmt.Sprintf("%d %s blocks %s", cfg.Layers, cfg.Block.Name(), cfg.Block.Shape())
	fmt.Fprintf(out, "charlm: Go sources from %s: %d training files (%d chars), %d held-out files (%d chars scored)\n",
		filepath.Join(c.root, "src"), c.trainFiles, len(c.train), c.heldN, res.HeldSize)
	fmt.Fprintf(out, "model: context %d, embed %d, %s; batch %d, %d steps, Adam lr %g cosine to %.2g, seed %d, device %s\n",
		W, cfg.Embed, kind, cfg.Batch, cfg.Steps, cfg.LR, cfg.LR*cfg.LRFloor, cfg.Seed, dev)
	fmt.Fprintf(out, "baselines on held-out text: unigram %.3f bits/char, bigram %.3f bits/char\n", res.Unigram, res.Bigram)

	g := G.NewGraph()
	m, err := newModel(g, cfg, cfg.Batch)
	if err != nil {
		return nil, fmt.Errorf("build model: %w", err)
	}
	learn := m.learnables()
	if err := dev.Learn(m.cost, learn); err != nil {
		return nil, err
	}
	var trackers []*train.LoadTracker
	for _, o := range m.outs {
		if o.Counts == nil {
			continue
		}
		lt, err := train.NewLoadTracker(cfg.Block.Experts)
		if err != nil {
			return nil, err
		}
		trackers = append(trackers, lt)
	}
	buf, err := newBatchBuf(dev, m, W)
	if err != nil {
		return nil, err
	}
	vm := G.NewTapeMachine(g, dev.VMOpts()...)
	defer vm.Close()
	steps := cfg.Steps
	opt, sched, err := cfg.Optimizer(steps)
	if err != nil {
		return nil, err
	}
	defer opt.Release()

	ev, err := newEvaluator(cfg, dev, m, evalTo-evalFrom)
	if err != nil {
		return nil, err
	}
	defer ev.close()

	// The data order: the training positions come from one source, saved with -save.
	src := rand.NewPCG(cfg.Seed, 2)
	rng := rand.New(src)
	sources := map[string]*rand.PCG{"data": src}
	// -held-mb too: the data fingerprint covers the held-out text, and this names the flag.
	cfg.RunFlags = fmt.Sprintf("%s -layers %d -context %d -embed %d -train-mb %g -held-mb %g -batch %d -seed %d -log-every %d", cfg.Block.RunFlags(), cfg.Layers, cfg.Context, cfg.Embed, cfg.TrainMB, cfg.HeldMB, cfg.Batch, cfg.Seed, cfg.LogEvery)
	if cfg.Checkpoints() {
		cfg.DataID = c.fingerprint()
	}
	loop, err := cfg.StartRun(out, bar, learn, opt, steps, sources, nil, cfg.Batch, "chr")
	if err != nil {
		return nil, err
	}
	defer loop.Close()
	if err := loop.CarryLoad(trackers...); err != nil {
		return nil, err
	}
	first, last, prog := loop.First, loop.Last, loop.Prog
	pos := make([]int, cfg.Batch)
	var evalSteps, evalBPC []float64
	stepper := trainutil.NewStepper(vm, opt, learn, cfg.Graph)
	defer stepper.Close()
	for step := first; step < last; step++ {
		for r := range pos {
			pos[r] = W + rng.IntN(len(c.train)-W)
		}
		buf.fill(c.train, pos)
		if err := buf.load(); err != nil {
			return nil, err
		}
		ce, err := stepper.Step(sched.LR(step), step, func() (float64, error) {
			ce, err := train.Scalar(m.ce.Value())
			if err != nil {
				return 0, err
			}
			l := 0
			for _, o := range m.outs {
				if o.Counts == nil {
					continue
				}
				if err := dev.TrackLoad(trackers[l], o.Counts, cfg.Batch*cfg.Block.TopK); err != nil {
					return 0, err
				}
				l++
			}
			return ce, nil
		})
		if err != nil {
			return nil, err
		}
		res.StepLoss = append(res.StepLoss, ce)
		prog.Add(cfg.Batch, fmt.Sprintf("loss %.3f bits/char", ce/math.Ln2))
		// The last window closes at the whole run's end, not at a -stop-at (see mnist).
		if len(trackers) > 0 && ((step+1)%cfg.LogEvery == 0 || step+1 == steps) {
			for l, lt := range trackers {
				prog.Logf("step %5d  block %d  %s", step+1, l+1, lt.Snapshot(step+1))
			}
		}
		if (cfg.EvalEvery > 0 && (step+1)%cfg.EvalEvery == 0) || step+1 == last {
			bpc, err := ev.bits(c.held, evalFrom, evalTo)
			if err != nil {
				return nil, err
			}
			evalSteps = append(evalSteps, float64(step+1))
			evalBPC = append(evalBPC, bpc)
			res.BPC = bpc
			prog.Logf("step %5d  held-out %.3f bits/char (bigram %.3f)  (%s)", step+1, bpc, res.Bigram, time.Since(start).Round(100*time.Millisecond))
		}
		if err := loop.Checkpoint(step); err != nil {
			return nil, err
		}
	}
	if err := loop.End(); err != nil {
		return nil, err
	}
	if len(evalSteps) == 0 { // resumed at the end: no step ran
		if res.BPC, err = ev.bits(c.held, evalFrom, evalTo); err != nil {
			return nil, err
		}
	}
	prog.Finish()
	stepper.Report(out)
	res.Elapsed = time.Since(start)
	verdict := fmt.Sprintf("beats the bigram baseline by %.3f bits/char", res.Bigram-res.BPC)
	if res.BPC >= res.Bigram {
		verdict = fmt.Sprintf("does NOT beat the bigram baseline: it trails it by %.3f bits/char", res.BPC-res.Bigram)
	}
	fmt.Fprintf(out, "held-out bits/char: model %.3f, bigram %.3f, unigram %.3f -> the %s model %s (%s, %.0f chars/s)\n",
		res.BPC, res.Bigram, res.Unigram, cfg.Block.Name(), verdict, res.Elapsed.Round(100*time.Millisecond), prog.Rate())

	gen, err := newForward(cfg, dev, m, 1)
	if err != nil {
		return nil, err
	}
	defer gen.close()
	res.Sample, err = gen.generate(cfg.Prompt, cfg.Sample, cfg.Temp, rand.New(rand.NewPCG(cfg.Seed, 4)))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(out, "sample (temperature %g):\n%s%s\n", cfg.Temp, cfg.Prompt, res.Sample)

	// Plots.
	if len(res.StepLoss) == 0 { // resumed at the end: no step ran, nothing to plot
		fmt.Fprintln(out, "no step ran (the checkpoint is at the end of the run): no plots written")
		return res, nil
	}
	xs := make([]float64, len(res.StepLoss))
	bits := make([]float64, len(res.StepLoss))
	for i, v := range res.StepLoss {
		xs[i], bits[i] = float64(first+i+1), v/math.Ln2
	}
	lastX := float64(first + len(xs))
	lossPNG := filepath.Join(cfg.Out, "loss.png")
	err = trainutil.SaveLines(lossPNG, "charlm on Go sources: "+kind, "step", "bits per character", false,
		trainutil.Series{Name: "train (EMA)", X: xs, Y: trainutil.Smooth(bits, 0.02)},
		trainutil.Series{Name: "held-out", X: evalSteps, Y: evalBPC, Points: true},
		trainutil.Series{Name: "bigram baseline", X: []float64{float64(first + 1), lastX}, Y: []float64{res.Bigram, res.Bigram}},
		trainutil.Series{Name: "unigram baseline", X: []float64{float64(first + 1), lastX}, Y: []float64{res.Unigram, res.Unigram}},
	)
	if err != nil {
		return nil, err
	}
	res.Files = append(res.Files, lossPNG)
	for l, lt := range trackers {
		name := "experts.png"
		if l > 0 {
			name = fmt.Sprintf("experts-block%d.png", l+1)
		}
		if len(lt.Steps) > 0 { // none before the first -log-every window closes (a -stop-at)
			p := filepath.Join(cfg.Out, name)
			title := fmt.Sprintf("charlm block %d expert load per %d steps", l+1, cfg.LogEvery)
			if err := trainutil.SaveExpertLoad(p, title, lt); err != nil {
				return nil, err
			}
			res.Files = append(res.Files, p)
		}
		fmt.Fprintf(out, "block %d over the run: %s  dropped %.2f%%\n", l+1, train.FormatLoad(lt.Total()), 100*lt.Dropped())
	}
	fmt.Fprintf(out, "wrote %v\n", res.Files)
	return res, nil
}

// forward runs a copy of the model forward only, at another batch size,
// sharing the training weights (updated in place on the host or the GPU).
type forward struct {
	dev  *trainutil.Device
	m    *model
	vm   G.VM
	buf  *batchBuf
	tail *forward // bits' last, partial batch's in capacity mode (nil otherwise)
}

// newEvaluator returns the forward model that scores n held-out positions in batches of
// cfg.EvalBatch (or n, if fewer). In capacity mode a batch's tokens compete for the experts'
// slots, so the last, partial batch gets a model of its own size: rows of zeros filling it up
// to the batch size would compete with its tokens.
func newEvaluator(cfg config, dev *trainutil.Device, trained *model, n int) (*forward, error) {
	batch := min(cfg.EvalBatch, max(n, 1))
	f, err := newForward(cfg, dev, trained, batch)
	if err != nil {
		return nil, err
	}
	if r := n % batch; r != 0 && cfg.Block.Capacity > 0 {
		if f.tail, err = newForward(cfg, dev, trained, r); err != nil {
			f.close()
			return nil, err
		}
	}
	return f, nil
}

func newForward(cfg config, dev *trainutil.Device, trained *model, batch int) (*forward, error) {
	g := G.NewGraph()
	m, err := newModel(g, cfg, batch)
	if err != nil {
		return nil, fmt.Errorf("build forward model: %w", err)
	}
	if err := trainutil.ShareWeights(m.learnables(), trained.learnables()); err != nil {
		return nil, err
	}
	f := &forward{dev: dev, m: m}
	if f.buf, err = newBatchBuf(dev, m, cfg.Context); err != nil {
		return nil, err
	}
	f.vm = G.NewTapeMachine(g, dev.VMOpts()...)
	return f, nil
}

func (f *forward) close() {
	f.vm.Close()
	if f.tail != nil {
		f.tail.close()
	}
}

// run scores the contexts ending before pos and returns the logits rows.
func (f *forward) run(text []uint8, pos []int) ([]float32, error) {
	f.buf.fill(text, pos)
	if err := f.buf.load(); err != nil {
		return nil, err
	}
	return f.dev.Logits(f.vm, f.m.logits)
}

// bits returns the model's bits per character on text[from:to].
func (f *forward) bits(text []uint8, from, to int) (float64, error) {
	total := 0.0
	pos := make([]int, 0, f.m.batch)
	for lo := from; lo < to; lo += f.m.batch {
		pos = pos[:0]
		for p := lo; p < min(lo+f.m.batch, to); p++ {
			pos = append(pos, p)
		}
		b := f
		if f.tail != nil && len(pos) == f.tail.m.batch {
			b = f.tail
		}
		lg, err := b.run(text, pos)
		if err != nil {
			return 0, fmt.Errorf("evaluate: %w", err)
		}
		for r, p := range pos {
			row := lg[r*vocab : (r+1)*vocab]
			lp, _ := trainutil.LogSoftmaxAt(row, int(text[p]))
			total -= lp / math.Ln2
		}
	}
	return total / float64(to-from), nil
}

// generate samples n characters after prompt at temperature temp.
func (f *forward) generate(prompt string, n int, temp float64, rng *rand.Rand) (string, error) {
	W := f.buf.w
	text := make([]uint8, W, W+len(prompt)+n)
	for i := range text {
		text[i] = symbol('\n')
	}
	text = append(text, encode([]byte(prompt))...)
	var sb strings.Builder
	p := make([]float64, vocab)
	for i := 0; i < n; i++ {
		lg, err := f.run(text, []int{len(text)})
		if err != nil {
			return "", fmt.Errorf("generate: %w", err)
		}
		row := lg[:vocab]
		mx := row[0]
		for _, v := range row {
			mx = max(mx, v)
		}
		sum := 0.0
		for c, v := range row {
			p[c] = math.Exp(float64(v-mx) / temp)
			sum += p[c]
		}
		u := rng.Float64() * sum
		next := vocab - 1
		for c := range p {
			if u < p[c] {
				next = c
				break
			}
			u -= p[c]
		}
		text = append(text, uint8(next))
		sb.WriteString(char(uint8(next)))
	}
	return sb.String(), nil
}
