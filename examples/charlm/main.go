// Command charlm trains a character-level language model whose feed-forward
// blocks are gomoe Mixture-of-Experts layers, on the Go standard library's
// source files, and compares it with unigram and bigram baselines.
//
// The model embeds a fixed window of characters, concatenates the
// embeddings, projects them to the model width and applies residual MoE
// feed-forward blocks (8 experts, top-2, SwiGLU by default) before a linear
// read-out over the vocabulary. One file in ten (by a hash of its path) is
// held out; bits per character on held-out text are reported for the model
// and for unigram and bigram models estimated in the same run.
//
// Usage:
//
//	go run ./examples/charlm [flags]
//
// It shows a progress bar with the loss, characters per second and time
// left, logs each block's per-expert load, prints a generated sample, and
// writes loss.png and experts.png to -out.
package main

import (
	"flag"
	"io"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

func main() {
	cfg := defaultConfig()
	cfg.Block.AddFlags(flag.CommandLine, "use dense FFN blocks instead of MoE layers (baseline)")
	flag.IntVar(&cfg.Layers, "layers", cfg.Layers, "number of MoE feed-forward blocks")
	flag.IntVar(&cfg.Context, "context", cfg.Context, "characters of context")
	flag.IntVar(&cfg.Embed, "embed", cfg.Embed, "embedding size per character")
	flag.IntVar(&cfg.Steps, "steps", cfg.Steps, "training steps")
	flag.IntVar(&cfg.Batch, "batch", cfg.Batch, "mini-batch size")
	cfg.LoopConfig.AddFlags(flag.CommandLine, "-steps")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed (weights, file sample, batches, generation)")
	flag.StringVar(&cfg.Out, "out", cfg.Out, "output folder for the plots")
	flag.StringVar(&cfg.GoRoot, "goroot", cfg.GoRoot, "Go installation whose src/ is the corpus (default: go env GOROOT)")
	flag.Float64Var(&cfg.TrainMB, "train-mb", cfg.TrainMB, "megabytes of training source to read")
	flag.Float64Var(&cfg.HeldMB, "held-mb", cfg.HeldMB, "megabytes of held-out source to read")
	flag.IntVar(&cfg.EvalChars, "eval-chars", cfg.EvalChars, "held-out characters scored")
	flag.IntVar(&cfg.EvalEvery, "eval-every", cfg.EvalEvery, "steps between held-out evaluations (0 = only at the end)")
	flag.IntVar(&cfg.LogEvery, "log-every", cfg.LogEvery, "steps between expert-load log lines")
	flag.IntVar(&cfg.Sample, "sample", cfg.Sample, "characters to generate")
	flag.StringVar(&cfg.Prompt, "prompt", cfg.Prompt, "text the sample starts from")
	flag.Float64Var(&cfg.Temp, "temp", cfg.Temp, "sampling temperature")
	flag.StringVar(&cfg.Device, "device", cfg.Device, "where to train: cpu, or cuda (needs a binary built with -tags gomoecuda)")
	flag.BoolVar(&cfg.Quiet, "quiet", cfg.Quiet, "no progress report")
	flag.Parse()

	trainutil.Main("charlm", cfg.Quiet, func(out, bar io.Writer) error {
		_, err := run(cfg, out, bar)
		return err
	})
}
