//go:build gomoecuda

package main

import (
	"io"
	"math"
	"testing"
)

// TestSmokeGPU trains the smoke configuration on the GPU (embedding, projection, two MoE
// blocks, RMSNorm, read-out and cross-entropy on the device engine) and on the CPU: the first
// steps' losses agree within 1e-3 relative and both beat a uniform guess on held-out text.
// The routing losses are off until they run on the device.
func TestSmokeGPU(t *testing.T) {
	cfg := smallConfig(t)
	cfg.Block.AuxCoef, cfg.Block.ZCoef = 0, 0
	cpu, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Device = "cuda"
	gpu, err := run(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	for s := 0; s < 5; s++ {
		if d := math.Abs(gpu.StepLoss[s]-cpu.StepLoss[s]) / cpu.StepLoss[s]; d > 1e-3 {
			t.Errorf("step %d: GPU loss %.6f, CPU %.6f", s, gpu.StepLoss[s], cpu.StepLoss[s])
		}
	}
	if !(gpu.BPC > 0 && gpu.BPC < math.Log2(vocab)) || math.Abs(gpu.BPC-cpu.BPC) > 0.3 {
		t.Errorf("held-out bits/char GPU %.3f, CPU %.3f", gpu.BPC, cpu.BPC)
	}
	t.Logf("held-out bits/char GPU %.3f (%s), CPU %.3f (%s)", gpu.BPC, gpu.Elapsed, cpu.BPC, cpu.Elapsed)
}
