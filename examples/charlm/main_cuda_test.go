//go:build gomoecuda

package main

import (
	"io"
	"math"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// TestSmokeGPU trains the smoke configuration on the GPU (embedding, projection, two MoE
// blocks, RMSNorm, read-out and cross-entropy on the device engine) and on the CPU: the first
// steps' losses agree within 1e-3 relative and both beat a uniform guess on held-out text.
// The routing losses are off until they run on the device.
func TestSmokeGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Block.AuxCoef, cfg.Block.ZCoef = 0, 0
	cpu, gpu := trainutil.RunCPUAndGPU(t, func(device string) (*result, error) {
		cfg.Device = device
		return run(cfg, io.Discard, nil)
	})
	trainutil.CheckFirstLossesAgree(t, gpu.StepLoss, cpu.StepLoss)
	if !(gpu.BPC > 0 && gpu.BPC < math.Log2(vocab)) || math.Abs(gpu.BPC-cpu.BPC) > 0.3 {
		t.Errorf("held-out bits/char GPU %.3f, CPU %.3f", gpu.BPC, cpu.BPC)
	}
	t.Logf("held-out bits/char GPU %.3f (%s), CPU %.3f (%s)", gpu.BPC, gpu.Elapsed, cpu.BPC, cpu.Elapsed)
}

// TestResumeGPU: on the GPU, with the default routing losses and -graph, a run stopped at step
// 50 with -save and resumed with -resume gives the unbroken GPU run's loss at every step, bit
// for bit, and its held-out bits/char and sample. (The resumed run captures its step again
// after the checkpoint's Adam state is loaded.)
func TestResumeGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Device, cfg.Graph = "cuda", true
	cfg.EvalEvery = 0
	cfg.Warmup, cfg.Clip = 5, 2
	whole, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	stopAndResume(t, cfg, whole, 50, &out)
	if strings.Contains(out.String(), "ran eagerly") {
		t.Errorf("-graph fell back: %s", out.String())
	}
}
