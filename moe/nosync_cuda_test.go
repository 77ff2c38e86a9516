//go:build gomoecuda

package moe

import (
	"fmt"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/train"
)

// TestLayerStepNoHostSync proves that a bfloat16 and a float32 training step of the layer (forward,
// backward, optimizer update) never waits for the GPU: a kernel that holds the stream is
// enqueued first (kernels.SyncProbe), the whole step is enqueued behind it, and only then is it
// released. A step with any host synchronisation (a read of the plan's offsets, a device-to-host
// copy, a stream sync) would block until the probe gives up. Dropless and capacity layers,
// with and without shared experts.
func TestLayerStepNoHostSync(t *testing.T) {
	eng := engine(t)
	if err := eng.Kernels().Sync(); err != nil {
		t.Fatal(err)
	}
	var cases []Config
	for _, dt := range []tensor.Dtype{bfloat16.Dtype, tensor.Float32} {
		for _, c := range []Config{
			{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, Seed: 41},
			{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, CapacityFactor: 1.25, Seed: 42},
			{Hidden: 64, FFN: 96, Experts: 16, TopK: 4, SharedFFN: 64, Seed: 43},
			{Hidden: 64, FFN: 96, Experts: 8, TopK: 2, CapacityFactor: 1.0, SharedFFN: 32, Seed: 44},
		} {
			c.Dtype = dt
			cases = append(cases, c)
		}
	}
	for i, cfg := range cases {
		t.Run(fmt.Sprintf("%d-%v", i, cfg.Dtype), func(t *testing.T) {
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
