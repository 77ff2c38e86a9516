//go:build gomoecuda

package moe

import (
	"fmt"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/train"
)

// TestLayerStepNoHostSync proves that a bfloat16 training step of the layer (forward,
// backward, optimizer update) never waits for the GPU: a kernel that holds the stream is
// enqueued first (kernels.SyncProbe), the whole step is enqueued behind it, and only then is it
// released. A step with any host synchronisation (a read of the plan's offsets, a device-to-host
// copy, a stream sync) would block until the probe gives up. Dropless and capacity layers,
// with and without shared experts.
func TestLayerStepNoHostSync(t *testing.T) {
	t.Setenv("GOMOE_SM90_GMM", "1") // the sm_90a grouped GEMM, until it is on by default
	eng := engine(t)
	if err := eng.Kernels().Sync(); err != nil {
		t.Fatal(err)
	}
	for i, cfg := range []Config{
		{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, Seed: 41},
		{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, CapacityFactor: 1.25, Seed: 42},
		{Hidden: 64, FFN: 96, Experts: 16, TopK: 4, SharedFFN: 64, Seed: 43},
		{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, CapacityFactor: 1.0, SharedFFN: 32, Seed: 44},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			cfg.Dtype = bfloat16.Dtype
			r := newRig(t, cfg, 256, 11)
			if err := eng.Bind(append(G.Nodes{r.target}, r.params...)...); err != nil {
				t.Fatal(err)
			}
			m := G.NewTapeMachine(r.g, G.WithEngine(eng))
			defer m.Close()
			opt := train.NewAdam(1e-3)
			defer opt.Release()
			// Two warm-up steps: the caching pool, the optimiser state and the GEMM
			// parameters are made once.
			for s := 0; s < 2; s++ {
				r.clearReads()
				if err := train.Step(m, opt, r.l.Learnables(), nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := eng.Status(); err != nil {
				t.Fatal(err)
			}
			r.clearReads()
			probe, err := eng.Kernels().StartSyncProbe(20 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			stepErr := train.Step(m, opt, r.l.Learnables(), nil)
			waited, err := probe.Release()
			if err != nil {
				t.Fatal(err)
			}
			if stepErr != nil {
				t.Fatal(stepErr)
			}
			if waited {
				t.Errorf("the training step waited for the GPU (a host synchronisation is left)")
			}
			if err := eng.Status(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
