//go:build gomoecuda

package main

import (
	"io"
	"math"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// TestSmokeGPU trains the smoke configuration on the GPU and on the CPU: the first steps'
// losses agree (float32 matmuls in another order, a few ulps per op: 1e-3 relative; later
// steps may route a token differently and drift), and the GPU run learns as well as the CPU run.
// The routing losses are off (-aux 0 -zloss 0) until they run on the device.
func TestSmokeGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Block.AuxCoef, cfg.Block.ZCoef = 0, 0
	cpu, gpu := trainutil.RunCPUAndGPU(t, func(device string) (*result, error) {
		cfg.Device = device
		return run(cfg, io.Discard, nil)
	})
	trainutil.CheckFirstLossesAgree(t, gpu.StepLoss, cpu.StepLoss)
	if gpu.TestAcc < 0.6 || math.Abs(gpu.TestAcc-cpu.TestAcc) > 0.05 {
		t.Errorf("test accuracy GPU %.3f, CPU %.3f", gpu.TestAcc, cpu.TestAcc)
	}
	t.Logf("GPU: loss %.4f → %.4f, accuracy %.3f, %s; CPU: loss %.4f → %.4f, accuracy %.3f, %s",
		gpu.StepLoss[0], gpu.StepLoss[len(gpu.StepLoss)-1], gpu.TestAcc, gpu.Elapsed,
		cpu.StepLoss[0], cpu.StepLoss[len(cpu.StepLoss)-1], cpu.TestAcc, cpu.Elapsed)
}

// TestDenseGPU: the dense baseline (SwiGLU FFN through op.SwiGLU) on the GPU.
func TestDenseGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Block.Dense = true
	cfg.Device = "cuda"
	res, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.TestAcc < 0.6 {
		t.Errorf("dense model on the GPU: test accuracy %.3f", res.TestAcc)
	}
}

// TestResumeGPU: on the GPU, a run stopped at step 40 with -save and resumed with -resume
// gives the unbroken GPU run's losses bit for bit, and its test accuracy.
func TestResumeGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.TrainN = 1000
	cfg.Device = "cuda"
	cfg.Clip = 1
	whole, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, b, _ := stopAndResume(t, cfg, 40, io.Discard)
	if err := trainutil.ResumedLosses(a.StepLoss, b.StepLoss, whole.StepLoss); err != nil {
		t.Fatal(err)
	}
	if b.TestAcc != whole.TestAcc {
		t.Errorf("resumed accuracy %v, unbroken %v", b.TestAcc, whole.TestAcc)
	}
	t.Logf("GPU: accuracy %.3f unbroken and resumed at step 40", whole.TestAcc)
}

// TestGraphGPU: the eager GPU run with the default routing losses (-aux 0.05 -zloss 0.001,
// the MoE layer's balance and z losses on the device engine) learns, and -graph (the training
// step captured once as a CUDA graph and replayed) gives its losses and test accuracy bit for
// bit.
func TestGraphGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Device = "cuda"
	eager, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if eager.TestAcc < 0.6 {
		t.Errorf("test accuracy %.3f", eager.TestAcc)
	}
	cfg.Graph = true
	var out strings.Builder
	replayed, err := run(cfg, &out, nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "ran eagerly") {
		t.Fatalf("-graph fell back: %s", out.String())
	}
	if len(replayed.StepLoss) != len(eager.StepLoss) {
		t.Fatalf("%d steps replayed, %d eager", len(replayed.StepLoss), len(eager.StepLoss))
	}
	for i := range eager.StepLoss {
		if math.Float64bits(replayed.StepLoss[i]) != math.Float64bits(eager.StepLoss[i]) {
			t.Fatalf("step %d: loss %v replayed, %v eager", i, replayed.StepLoss[i], eager.StepLoss[i])
		}
	}
	if replayed.TestAcc != eager.TestAcc {
		t.Errorf("test accuracy %v replayed, %v eager", replayed.TestAcc, eager.TestAcc)
	}
	t.Logf("%d steps: eager %s, replayed %s", len(eager.StepLoss), eager.Elapsed, replayed.Elapsed)
}
