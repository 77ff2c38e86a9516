package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// TestHostileFlags: every bad flag value (negative, NaN, Inf, past what an int holds) makes
// the program exit with a non-zero status and a message naming the flag, before it reads any
// data or writes any file.
func TestHostileFlags(t *testing.T) {
	trainutil.CheckBadFlags(t, "TestHostileFlags", "charlm", main, []trainutil.BadFlag{
		{Name: "-sample -100", Args: []string{"-sample", "-100"}, Want: "-sample -100: want an integer in [0, 16777216]"},
		{Name: "-temp NaN", Args: []string{"-temp", "NaN"}, Want: "-temp NaN: want a finite number > 0"},
		{Name: "-temp -1", Args: []string{"-temp", "-1"}, Want: "-temp -1"},
		{Name: "-train-mb NaN", Args: []string{"-train-mb", "NaN"}, Want: "-train-mb NaN"},
		{Name: "-train-mb 1e300 (int wraps)", Args: []string{"-train-mb", "1e300"}, Want: "-train-mb 1e+300: want a finite number > 0 and <= 1e+06"},
		{Name: "-held-mb -1", Args: []string{"-held-mb", "-1"}, Want: "-held-mb -1"},
		{Name: "-lr NaN", Args: []string{"-lr", "NaN"}, Want: "-lr NaN"},
		{Name: "-lr-floor 2", Args: []string{"-lr-floor", "2"}, Want: "-lr-floor 2"},
		{Name: "-eval-every -1", Args: []string{"-eval-every", "-1"}, Want: "-eval-every -1"},
		{Name: "-context 0", Args: []string{"-context", "0"}, Want: "-context 0"},
		{Name: "-layers huge", Args: []string{"-layers", "100000"}, Want: "-layers 100000"},
		{Name: "-topk 0", Args: []string{"-topk", "0"}, Want: "-topk 0"},
		{Name: "-capacity NaN", Args: []string{"-capacity", "NaN"}, Want: "-capacity NaN"},
		{Name: "-out empty", Args: []string{"-out", ""}, Want: "-out: empty output folder"},
		{Name: "-device tpu", Args: []string{"-device", "tpu"}, Want: "tpu"},
		{Name: "unknown flag (flag package: exit 2)", Args: []string{"-nosuchflag"}, Want: "flag provided but not defined: -nosuchflag"},
	})
}

// TestBatchBeyondCorpus: a -batch or -context that the text read cannot serve is an error
// naming the flag and the sizes, before training. A -batch larger than the training text used
// to be reported as "corpus too small for context 8", naming the context, which was fine.
func TestBatchBeyondCorpus(t *testing.T) {
	for _, c := range []struct {
		name         string
		batch, ctx   int
		trainMB      float64
		heldMB       float64
		want, reject string
	}{
		{"-batch", 1 << 20, 8, 0.3, 0.05, "-batch 1048576", "corpus too small for context"},
		{"-context", 32, 1 << 16, 0.01, 0.05, "-context 65536", ""},
		// The training text serves the context; the held-out text (one file) does not.
		{"-context beyond the held-out text", 32, 1 << 16, 0.3, 0.001, "held-out characters, want more than -context 65536 plus 1", ""},
	} {
		cfg := smallConfig(t)
		cfg.Batch, cfg.Context, cfg.TrainMB, cfg.HeldMB = c.batch, c.ctx, c.trainMB, c.heldMB
		var out bytes.Buffer
		_, err := run(cfg, &out, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) || (c.reject != "" && strings.Contains(err.Error(), c.reject)) {
			t.Errorf("%s: %v, want an error naming %q", c.name, err, c.want)
		}
		if strings.Contains(out.String(), "step ") {
			t.Errorf("%s: the run trained:\n%s", c.name, out.String())
		}
	}
}
