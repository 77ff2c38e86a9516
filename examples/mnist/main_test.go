package main

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// smallConfig is a few-second run on a slice of MNIST.
func smallConfig(t *testing.T) config {
	cfg := defaultConfig()
	cfg.TrainN, cfg.TestN = 3000, 500
	cfg.Steps = 80
	cfg.Batch = 32
	cfg.EvalBatch = 250
	cfg.Block.Hidden, cfg.Block.FFN = 32, 32
	cfg.LogEvery = 20
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
	trainutil.CheckLossFalls(t, res.StepLoss, 0.6)
	// Ten classes: a model that learnt nothing is right 10 % of the time.
	if res.TestAcc < 0.6 {
		t.Errorf("test accuracy %.3f after %d steps, want >= 0.6", res.TestAcc, cfg.Steps)
	}
	if math.IsNaN(res.TestLoss) || res.TestLoss <= 0 {
		t.Errorf("test loss %v", res.TestLoss)
	}
	if len(res.Load) != cfg.Block.Experts {
		t.Fatalf("load has %d experts, want %d", len(res.Load), cfg.Block.Experts)
	}
	if s := trainutil.Mean(res.Load) * float64(len(res.Load)); math.Abs(s-1) > 1e-9 {
		t.Errorf("expert shares sum to %v, want 1", s)
	}
	trainutil.CheckPNGs(t, cfg.Out, "loss.png", "experts.png")
	for _, want := range []string{"expert load %:", "test accuracy", "wrote"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDenseBaseline(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Block.Dense = true
	cfg.Steps = 40
	res, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Load != nil {
		t.Errorf("dense model reported expert load %v", res.Load)
	}
	trainutil.CheckPNGs(t, cfg.Out, "loss.png")
	if _, err := os.Stat(filepath.Join(cfg.Out, "experts.png")); err == nil {
		t.Errorf("dense model wrote experts.png")
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config)
		want string
	}{
		{"device", func(c *config) { c.Device = "tpu" }, "device"},
		{"eval-every", func(c *config) { c.EvalEvery = -1 }, "eval-every"},
		{"batch", func(c *config) { c.Batch = 0 }, "batch"},
		{"steps", func(c *config) { c.Steps, c.Epochs = 0, 0 }, "steps"},
		{"lr", func(c *config) { c.LR = 0 }, "-lr 0: want a finite number > 0"},
		{"topk", func(c *config) { c.Block.TopK = 9 }, "-topk 9"},
		{"act", func(c *config) { c.Block.Act = "relu" }, "activation"},
		{"drop", func(c *config) { c.Block.Drop = "random" }, "drop policy"},
		{"data", func(c *config) { c.Data = filepath.Join(os.TempDir(), "no-such-mnist-dir") }, "no-such-mnist-dir"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := smallConfig(t)
			tt.edit(&cfg)
			_, err := run(cfg, io.Discard, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one naming %q", err, tt.want)
			}
			if _, err := os.Stat(filepath.Join(cfg.Out, "loss.png")); err == nil {
				t.Errorf("a failed run wrote loss.png")
			}
		})
	}
}

// TestResume: a run stopped with -save (-stop-at) and resumed with -resume gives the
// unbroken run's loss at every step, bit for bit, and its test accuracy and loss. 1000
// images are 31 steps an epoch: the stops fall inside the second epoch and on the boundary
// of the third, so the resumed run must redraw the epoch's permutation.
func TestResume(t *testing.T) {
	cfg := smallConfig(t)
	cfg.TrainN, cfg.TestN, cfg.EvalBatch = 1000, 200, 200
	cfg.Warmup, cfg.Clip = 5, 1 // the schedule's warmup and clipping resume too
	whole, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if whole.TestAcc < 0.5 {
		t.Errorf("test accuracy %.3f", whole.TestAcc)
	}
	for _, stop := range []int{40, 62} {
		var out bytes.Buffer
		a, b, dir := stopAndResume(t, cfg, stop, &out)
		if want := fmt.Sprintf("resumed from %s at step %d of 80", dir, stop); !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
		if err := trainutil.ResumedLosses(a.StepLoss, b.StepLoss, whole.StepLoss); err != nil {
			t.Fatalf("stop %d: %v", stop, err)
		}
		if b.TestAcc != whole.TestAcc || b.TestLoss != whole.TestLoss {
			t.Errorf("stop %d: resumed accuracy %v, test loss %v; unbroken %v, %v", stop, b.TestAcc, b.TestLoss, whole.TestAcc, whole.TestLoss)
		}
		// The expert load over the run goes on from the checkpoint's (it covered only the
		// resumed steps).
		if fmt.Sprint(b.Load) != fmt.Sprint(whole.Load) || len(whole.Load) == 0 {
			t.Errorf("stop %d: resumed run's load over the run %v, unbroken %v", stop, b.Load, whole.Load)
		}
		if fmt.Sprint(b.LoadSteps) != fmt.Sprint(whole.LoadSteps) {
			t.Errorf("stop %d: resumed run's load snapshots at steps %v, unbroken %v", stop, b.LoadSteps, whole.LoadSteps)
		}
	}
}

// TestResumeAtTheEnd: resuming a finished run (MoE and dense) runs no step and reports the
// saved model's test accuracy, without plots.
func TestResumeAtTheEnd(t *testing.T) {
	for _, dense := range []bool{false, true} {
		cfg := smallConfig(t)
		cfg.Steps = 20
		cfg.Block.Dense = dense
		done, res, out, _ := trainutil.ResumeFinished(t, func(save, resume string, out io.Writer) (*result, error) {
			c := cfg
			c.Save, c.Resume = save, resume
			return run(c, out, nil)
		})
		if len(res.StepLoss) != 0 || res.TestAcc != done.TestAcc || !strings.Contains(out, "no plots written") {
			t.Errorf("dense %v: %d steps, accuracy %v (the run gave %v); output:\n%s", dense, len(res.StepLoss), res.TestAcc, done.TestAcc, out)
		}
	}
}

// TestInterrupt: Ctrl-C during training stops the run after the step it is in, saves the
// checkpoint (-save), says so, and exits with a non-zero status.
func TestInterrupt(t *testing.T) {
	trainutil.CheckInterrupt(t, "TestInterrupt", "mnist", main, []string{"-hidden", "32", "-ffn", "32", "-eval-every", "100000"})
}

// TestResumeOtherFlags: resuming with a flag that changes the run (learning rate, seed, batch,
// routing, the expert-load windows) is an error naming the flag, not a silent continuation of
// another run.
func TestResumeOtherFlags(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Steps = 10
	cfg.Save, cfg.StopAt = filepath.Join(t.TempDir(), "ckpt"), 5
	if _, err := run(cfg, io.Discard, nil); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		edit func(*config)
		want string
	}{
		{func(c *config) { c.LR = 0.1 }, "had -lr 0.002, this one -lr 0.1"},
		{func(c *config) { c.Seed = 7 }, "-seed"},
		{func(c *config) { c.Batch = 16 }, "-batch"},
		{func(c *config) { c.Block.TopK = 1 }, "-topk"},
		{func(c *config) { c.Block.Capacity = 1.25 }, "-capacity"},
		{func(c *config) { c.Shift = 0 }, "-shift"},
		// The saved run's step and time of reaching -target are for its target: another value
		// reported them as the step and time of reaching this one.
		{func(c *config) { c.Target = 0.5 }, "had -target 0.975, this one -target 0.5"},
		// The saved load tracker's windows are -log-every steps: another value mixed two window
		// sizes in the load log and the expert-load plot (titled with the new one).
		{func(c *config) { c.LogEvery = 3 }, "had -log-every 20, this one -log-every 3"},
		// Other images (another -data folder, other files in it; here fewer of them): the
		// run went on from the checkpoint on other data, silently.
		{func(c *config) { c.TrainN-- }, "the saved run trained on other data"},
		{func(c *config) { c.TestN-- }, "the saved run trained on other data"},
	} {
		c := cfg
		c.Save, c.StopAt, c.Resume = "", 0, cfg.Save
		tt.edit(&c)
		if _, err := run(c, io.Discard, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("resumed with other flags: error %v, want one containing %q", err, tt.want)
		}
	}
	c := cfg
	c.Save, c.StopAt, c.Resume, c.Clip, c.EvalEvery = "", 0, cfg.Save, 1, 3 // -clip and the evaluations may change
	if _, err := run(c, io.Discard, nil); err != nil {
		t.Errorf("resumed with the same flags: %v", err)
	}
}

// TestResumeReport: a resumed run reports what the unbroken run reports: the mean training
// loss of the evaluation interval it was stopped in (not of the steps since the resume), and
// the step and time at which the test accuracy reached -target before the stop (not "never
// reached", nor a later step).
func TestResumeReport(t *testing.T) {
	cfg := smallConfig(t)
	cfg.TrainN, cfg.TestN, cfg.EvalBatch, cfg.Steps = 1000, 200, 200, 50
	cfg.Target = 0.3 // reached at the first evaluation, step 31
	var wholeOut bytes.Buffer
	whole, err := run(cfg, &wholeOut, nil)
	if err != nil {
		t.Fatal(err)
	}
	if whole.TargetStep != 31 {
		t.Fatalf("unbroken run reached the target at step %d, want 31", whole.TargetStep)
	}
	var out bytes.Buffer
	a, b, _ := stopAndResume(t, cfg, 40, &out)
	if b.TargetStep != whole.TargetStep || b.TargetTime != a.TargetTime {
		t.Errorf("resumed run: target reached at step %d after %v; the run before the stop: step %d after %v", b.TargetStep, b.TargetTime, a.TargetStep, a.TargetTime)
	}
	if strings.Contains(out.String(), "never reached") {
		t.Errorf("resumed run says the target was never reached:\n%s", out.String())
	}
	re := regexp.MustCompile(`epoch 1\.61  train loss \S+  test loss \S+  test accuracy \S+`)
	w, r := re.FindString(wholeOut.String()), re.FindString(out.String())
	if w == "" || w != r {
		t.Errorf("last evaluation: unbroken run %q, resumed run %q", w, r)
	}
}

// stopAndResume runs cfg with -save in a fresh folder and -stop-at stop, then resumes it from
// that folder (its output to out), and returns both runs' results and the folder.
func stopAndResume(t *testing.T, cfg config, stop int, out io.Writer) (a, b *result, dir string) {
	t.Helper()
	return trainutil.StopAndResume(t, cfg, func(c *config) *trainutil.LoopConfig { return &c.LoopConfig }, stop,
		func(c config, out io.Writer) (*result, error) { return run(c, out, nil) }, out)
}

// TestResumeTargetAtStop: the evaluation that -stop-at adds (not one of the run's scheduled
// evaluations) does not count as reaching -target, so the resumed run reports the step and
// time the unbroken run reports. The stop, step 20, comes before the first scheduled
// evaluation (step 31, an epoch), and -target is the accuracy measured there: the stopped run
// used to record the target as reached at step 20 and save it, and the resumed run reported
// step 20, a step at which the unbroken run never evaluates.
func TestResumeTargetAtStop(t *testing.T) {
	cfg := smallConfig(t)
	cfg.TrainN, cfg.TestN, cfg.EvalBatch, cfg.Steps = 1000, 200, 200, 50
	probe := cfg
	probe.StopAt = 20
	p, err := run(probe, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Target = p.TestAcc // the accuracy at the stop
	whole, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if whole.TargetStep == 20 {
		t.Fatalf("the unbroken run reached the target at step 20, where it does not evaluate")
	}
	var out bytes.Buffer
	a, b, _ := stopAndResume(t, cfg, 20, &out)
	if a.TargetStep != 0 {
		t.Errorf("the stopped run counted the evaluation at -stop-at 20 as reaching the target (step %d)", a.TargetStep)
	}
	if b.TargetStep != whole.TargetStep {
		t.Errorf("resumed run: target reached at step %d, unbroken run at step %d:\n%s", b.TargetStep, whole.TargetStep, out.String())
	}
}

// TestOutNotWritable: an -out folder that cannot be written (/proc/self, even as root) is an
// error naming -out before any training; the run used to train to the end and fail only when
// it wrote the first plot.
func TestOutNotWritable(t *testing.T) {
	trainutil.CheckOutNotWritable(t, smallConfig(t), func(c *config, out string) { c.Out = out },
		func(c config, out io.Writer) (*result, error) { return run(c, out, nil) })
}
