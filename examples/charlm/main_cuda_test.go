//go:build gomoecuda

package main

import (
	"io"
	"math"
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
