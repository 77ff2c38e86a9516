package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
	"github.com/gomoe/gomoe/internal/hostmem"
)

// smallConfig is a few-second run on a small slice of the Go sources.
func smallConfig(t *testing.T) config {
	cfg := defaultConfig()
	cfg.TrainMB, cfg.HeldMB = 0.3, 0.05
	cfg.EvalChars = 3000
	cfg.Steps = 120
	cfg.Batch = 32
	cfg.EvalBatch = 500
	cfg.EvalEvery = 60
	cfg.Context = 8
	cfg.Embed = 8
	cfg.Block.Hidden, cfg.Block.FFN = 32, 32
	cfg.LogEvery = 30
	cfg.Sample = 40
	cfg.LR = 5e-3
	cfg.Out = filepath.Join(t.TempDir(), "out")
	return cfg
}

func TestSmoke(t *testing.T) {
	cfg := smallConfig(t)
	var out bytes.Buffer
	res, err := run(cfg, &out, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if len(res.StepLoss) != cfg.Steps {
		t.Fatalf("got %d step losses, want %d", len(res.StepLoss), cfg.Steps)
	}
	trainutil.CheckLossFalls(t, res.StepLoss, 0.8)
	// A uniform guess over the vocabulary costs log2(vocab) bits.
	if !(res.BPC > 0 && res.BPC < math.Log2(vocab)) {
		t.Errorf("held-out bits/char %v, want in (0, %.2f)", res.BPC, math.Log2(vocab))
	}
	if !(res.Bigram < res.Unigram) {
		t.Errorf("bigram baseline %.3f not below unigram %.3f", res.Bigram, res.Unigram)
	}
	if n := len([]rune(res.Sample)); n != cfg.Sample {
		t.Errorf("sample has %d characters, want %d", n, cfg.Sample)
	}
	trainutil.CheckPNGs(t, cfg.Out, "loss.png", "experts.png", "experts-block2.png")
	for _, want := range []string{"block 1  expert load %:", "block 2  expert load %:", "unigram", "bigram", "sample", "wrote"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config)
		want string
	}{
		{"device", func(c *config) { c.Device = "tpu" }, "device"},
		{"layers", func(c *config) { c.Layers = 0 }, "layers"},
		{"context", func(c *config) { c.Context = 0 }, "context"},
		{"steps", func(c *config) { c.Steps = 0 }, "steps"},
		{"temp", func(c *config) { c.Temp = 0 }, "-temp 0: want a finite number > 0"},
		{"topk", func(c *config) { c.Block.TopK = 9 }, "-topk 9"},
		{"capacity", func(c *config) { c.Block.Capacity = -1 }, "-capacity -1"},
		{"goroot", func(c *config) { c.GoRoot = filepath.Join(os.TempDir(), "no-such-goroot") }, "no-such-goroot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := smallConfig(t)
			tt.edit(&cfg)
			_, err := run(cfg, io.Discard, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestTrainingBeyondMemory: a model whose blocks' weights fit but whose training does not
// (every node's value at a large batch, past an 8 MB limit) is an error before the first step,
// and no plot is written; blocks whose weights, gradients and Adam moments do not fit are an
// error before any block is built (the blocks were all built before the model's check).
func TestTrainingBeyondMemory(t *testing.T) {
	defer hostmem.SetLimit(hostmem.SetLimit(8 << 20))
	cfg := smallConfig(t)
	cfg.Batch = 4096 // each block's routed rows fit (5.2 MB: moe's own check passes), the whole step does not
	_, err := run(cfg, io.Discard, nil)
	if err == nil || !strings.Contains(err.Error(), "training this model") || !strings.Contains(err.Error(), "more than the 8388608 bytes") {
		t.Fatalf("run past the memory limit: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Out, "loss.png")); err == nil {
		t.Errorf("a failed run wrote loss.png")
	}
	cfg = smallConfig(t)
	cfg.Layers = 32
	cfg.Block.Hidden, cfg.Block.FFN = 128, 128 // each block's weights: 1.6 MB
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = run(cfg, io.Discard, nil)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "-layers 32 of MoE blocks E=8 K=2 swiglu H=128 F=128 (their weights, gradients and Adam moments) need 2.019e+08 bytes") {
		t.Fatalf("32 blocks past the memory limit: %v", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("the refused run allocated %d bytes first", n)
	}
}

// TestNgram checks the baselines against probabilities worked out by hand.
func TestNgram(t *testing.T) {
	train := encode([]byte("abab"))
	n := newNgram(train)
	a, b, c := symbol('a'), symbol('b'), symbol('c')
	// Unigram, add-one over the vocabulary: counts a=2, b=2, 4 symbols.
	wantA := 3.0 / (4 + vocab)
	wantC := 1.0 / (4 + vocab)
	if !close(n.uni[a], wantA) || !close(n.uni[c], wantC) {
		t.Errorf("unigram P(a)=%v P(c)=%v, want %v %v", n.uni[a], n.uni[c], wantA, wantC)
	}
	// Bigram after 'a': "ab" twice, Dirichlet prior of weight 1 on the unigram.
	wantBA := (2 + n.uni[b]) / 3
	if !close(n.bi[a][b], wantBA) {
		t.Errorf("bigram P(b|a)=%v, want %v", n.bi[a][b], wantBA)
	}
	// After 'b': "ba" once.
	if want := (1 + n.uni[a]) / 2; !close(n.bi[b][a], want) {
		t.Errorf("bigram P(a|b)=%v, want %v", n.bi[b][a], want)
	}
	// Every bigram row is a distribution.
	for p := 0; p < vocab; p++ {
		s := 0.0
		for q := 0; q < vocab; q++ {
			s += n.bi[p][q]
		}
		if !close(s, 1) {
			t.Fatalf("bigram row %d sums to %v", p, s)
		}
	}
	text := encode([]byte("abc"))
	uni, bi := n.bits(text, 1, 3)
	wantUni := -(math.Log2(n.uni[b]) + math.Log2(n.uni[c])) / 2
	wantBi := -(math.Log2(n.bi[a][b]) + math.Log2(n.bi[b][c])) / 2
	if !close(uni, wantUni) || !close(bi, wantBi) {
		t.Errorf("bits = %v, %v; want %v, %v", uni, bi, wantUni, wantBi)
	}
}

func close(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestSymbols(t *testing.T) {
	tests := []struct {
		in   byte
		want string
	}{
		{'\t', "\t"}, {'\n', "\n"}, {' ', " "}, {'a', "a"}, {'~', "~"}, {'\r', "·"}, {0xc3, "·"},
	}
	for _, tt := range tests {
		s := symbol(tt.in)
		if int(s) >= vocab {
			t.Fatalf("symbol(%q) = %d out of the vocabulary", tt.in, s)
		}
		if got := char(s); got != tt.want {
			t.Errorf("char(symbol(%q)) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGenerated(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{"// Code generated by mkerrors; DO NOT EDIT.\n\npackage syscall\n", true},
		{"// Copyright 2009\n\n// Code generated by x. DO NOT EDIT.\n\npackage p\n", true},
		{"package p\n\n// Code generated by x. DO NOT EDIT.\n", false},
		{"// Code generated by hand, please edit.\npackage p\n", false},
		{"package p\n", false},
	}
	for _, tt := range tests {
		if got := generated([]byte(tt.src)); got != tt.want {
			t.Errorf("generated(%q) = %v, want %v", tt.src, got, tt.want)
		}
	}
}

// TestResume: a run stopped at step 50 of 120 with -save and resumed with -resume gives the
// unbroken run's loss at every step, bit for bit, and its held-out bits/char and sample.
func TestResume(t *testing.T) {
	cfg := smallConfig(t)
	cfg.EvalEvery = 0
	cfg.Warmup, cfg.Clip = 5, 2
	var wholeOut bytes.Buffer
	whole, err := run(cfg, &wholeOut, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	dir := stopAndResume(t, cfg, whole, 50, &out)
	if !strings.Contains(out.String(), "resumed from "+dir+" at step 50 of 120") {
		t.Errorf("output lacks the resume line:\n%s", out.String())
	}
	// Each block's expert load over the run goes on from the checkpoint's (it covered only the
	// resumed steps).
	overRun := func(s string) (lines []string) {
		for _, l := range strings.Split(s, "\n") {
			if strings.Contains(l, "over the run") {
				lines = append(lines, l)
			}
		}
		return lines
	}
	if got, want := overRun(out.String()), overRun(wholeOut.String()); len(want) == 0 || strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("resumed run's load over the run:\n%s\nunbroken:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	trainutil.CheckLossFalls(t, whole.StepLoss, 0.8)
}

// stopAndResume runs cfg stopped after step stop with -save, then resumed with -resume (its
// output to out), and checks that the two give the unbroken run whole's loss at every step, bit
// for bit, and its held-out bits/char and sample. It returns the checkpoint's folder.
func stopAndResume(t *testing.T, cfg config, whole *result, stop int, out io.Writer) (dir string) {
	t.Helper()
	a, b, dir := trainutil.StopAndResume(t, cfg, loopOf, stop, runTo, out)
	if err := trainutil.ResumedLosses(a.StepLoss, b.StepLoss, whole.StepLoss); err != nil {
		t.Fatal(err)
	}
	if b.BPC != whole.BPC || b.Sample != whole.Sample {
		t.Errorf("resumed: %v bits/char, sample %q; unbroken %v, %q", b.BPC, b.Sample, whole.BPC, whole.Sample)
	}
	return dir
}

// loopOf and runTo are cfg's LoopConfig and run without a progress bar, for
// trainutil.StopAndResume.
func loopOf(c *config) *trainutil.LoopConfig { return &c.LoopConfig }

func runTo(c config, out io.Writer) (*result, error) { return run(c, out, nil) }

// TestResumeAtTheEnd: resuming a finished run runs no step and reports the saved model
// (no plots: there is no curve); resuming past this run's end is an error that leaves the
// checkpoint as it was.
func TestResumeAtTheEnd(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Steps, cfg.EvalEvery = 40, 0
	done, res, out, dir := trainutil.ResumeFinished(t, func(save, resume string, out io.Writer) (*result, error) {
		c := cfg
		c.Save, c.Resume = save, resume
		return run(c, out, nil)
	})
	if len(res.StepLoss) != 0 || res.BPC != done.BPC || !strings.Contains(out, "no plots written") {
		t.Errorf("resumed at the end: %d steps, %v bits/char (the run gave %v); output:\n%s", len(res.StepLoss), res.BPC, done.BPC, out)
	}
	ckpt := filepath.Join(dir, trainutil.CheckpointFile)
	before, err := os.ReadFile(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		mod  func(*config)
	}{
		{"-stop-at before the saved step", func(c *config) { c.StopAt = 20 }},
		{"-steps before the saved step", func(c *config) { c.Steps = 30 }},
	} {
		r := cfg
		r.Resume, r.Save = dir, dir
		c.mod(&r)
		if _, err := run(r, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "past this run's end") {
			t.Errorf("%s: got %v, want an error", c.name, err)
		}
		if after, _ := os.ReadFile(ckpt); !bytes.Equal(after, before) {
			t.Errorf("%s: the checkpoint changed", c.name)
		}
	}
	// -save naming a file fails before any training.
	file := filepath.Join(t.TempDir(), "afile")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	s := cfg
	s.Save = file
	var out2 bytes.Buffer
	if _, err := run(s, &out2, nil); err == nil || !strings.Contains(err.Error(), "-save") || strings.Contains(out2.String(), "step ") {
		t.Errorf("-save naming a file: got %v after output:\n%s", err, out2.String())
	}
	// -save naming a folder nobody can write (/proc/self, even as root) fails before any
	// training too: the first checkpoint used to fail only after it.
	if runtime.GOOS == "linux" {
		s.Save = "/proc/self"
		out2.Reset()
		if _, err := run(s, &out2, nil); err == nil || !strings.Contains(err.Error(), "-save /proc/self: the folder cannot be written") || strings.Contains(out2.String(), "step ") {
			t.Errorf("-save /proc/self: got %v after output:\n%s", err, out2.String())
		}
	}
}

// TestInterrupt: Ctrl-C during training stops the run after the step it is in, saves the
// checkpoint (-save), says so, and exits with a non-zero status.
func TestInterrupt(t *testing.T) {
	trainutil.CheckInterrupt(t, "TestInterrupt", "charlm", main,
		[]string{"-train-mb", "0.3", "-held-mb", "0.05", "-eval-chars", "1000", "-eval-every", "0", "-hidden", "32", "-ffn", "32", "-sample", "0"})
}

// TestResumeOtherFlags: resuming with a flag that changes the run is an error naming it.
func TestResumeOtherFlags(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Steps = 10
	cfg.Save, cfg.StopAt = filepath.Join(t.TempDir(), "ckpt"), 5
	if _, err := run(cfg, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	c := cfg
	c.Save, c.StopAt, c.Resume, c.Seed = "", 0, cfg.Save, 9
	if _, err := run(c, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "had -seed 1, this one -seed 9") {
		t.Errorf("resumed with another -seed: error %v", err)
	}
	// The saved load trackers' windows are -log-every steps (see mnist's test).
	c = cfg
	c.Save, c.StopAt, c.Resume, c.LogEvery = "", 0, cfg.Save, 4
	if _, err := run(c, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "had -log-every 30, this one -log-every 4") {
		t.Errorf("resumed with another -log-every: error %v", err)
	}
	// Another -held-mb reads other held-out text, which the data fingerprint refuses: the
	// error named no flag ("the saved run trained on other data"), as if the files had changed.
	c = cfg
	c.Save, c.StopAt, c.Resume, c.HeldMB = "", 0, cfg.Save, 0.02
	if _, err := run(c, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "had -held-mb 0.05, this one -held-mb 0.02") {
		t.Errorf("resumed with another -held-mb: error %v", err)
	}
}

// TestResumeOtherText: a resume on other text (a -goroot whose files differ from the saved
// run's) is an error; it used to go on from the checkpoint on the other text, silently. The
// same files under another folder are the same data.
func TestResumeOtherText(t *testing.T) {
	corpus := func(edit string) string {
		root := t.TempDir()
		dir := filepath.Join(root, "src", "p")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i := range 40 { // about one in ten files is held out: 40 give both sets some
			src := fmt.Sprintf("package p\n\n// f%02d holds %d.\nconst f%02d = %d\n", i, i*i, i, i*i)
			if i == 3 {
				src += edit
			}
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.go", i)), []byte(src), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	cfg := smallConfig(t)
	cfg.GoRoot, cfg.Steps, cfg.Batch, cfg.Context, cfg.EvalEvery, cfg.Sample = corpus(""), 10, 4, 2, 0, 0
	cfg.Save, cfg.StopAt = filepath.Join(t.TempDir(), "ckpt"), 5
	if _, err := run(cfg, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	c := cfg
	c.Save, c.StopAt, c.Resume = "", 0, cfg.Save
	c.GoRoot = corpus("")
	if _, err := run(c, io.Discard, nil); err != nil {
		t.Errorf("resumed on a copy of the text: %v", err)
	}
	c.GoRoot = corpus("// one more line\n")
	if _, err := run(c, io.Discard, nil); err == nil || !strings.Contains(err.Error(), "the saved run trained on other data") {
		t.Errorf("resumed on other text: error %v", err)
	}
}

// TestVerdictLine: when the model does not beat the bigram baseline (2 steps on sources that
// are the same line over and over, where the bigram is nearly certain), the summary says by how
// much it trails, a positive number. It used to say "does NOT beat the bigram baseline by
// -6.184 bits/char", a negative margin under a negated verb.
func TestVerdictLine(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "src", "p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 40 { // about one in ten files is held out: 40 give both sets some
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.go", i)), []byte("package p\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg := smallConfig(t)
	cfg.GoRoot, cfg.Steps, cfg.Batch, cfg.Context, cfg.EvalEvery, cfg.Sample = root, 2, 4, 2, 0, 0
	var out bytes.Buffer
	res, err := run(cfg, &out, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if !(res.BPC > res.Bigram) {
		t.Fatalf("after 2 steps the model's %.3f bits/char beat the bigram's %.3f", res.BPC, res.Bigram)
	}
	want := fmt.Sprintf("the MoE model does NOT beat the bigram baseline: it trails it by %.3f bits/char", res.BPC-res.Bigram)
	if !strings.Contains(out.String(), want) || strings.Contains(out.String(), "by -") {
		t.Errorf("output lacks %q:\n%s", want, out.String())
	}
}

// TestOutNotWritable: an -out folder that cannot be written (/proc/self, even as root) is an
// error naming -out before any training; the run used to train to the end and fail only when
// it wrote the first plot.
func TestOutNotWritable(t *testing.T) {
	trainutil.CheckOutNotWritable(t, smallConfig(t), func(c *config, out string) { c.Out = out }, runTo)
}
