//go:build gomoecuda

package moe

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/ep/nccl"
	"github.com/gomoe/gomoe/train"
)

// oneNCCLRank is a communicator of one NCCL rank on GPU 0 (the device engine's GPU).
func oneNCCLRank(t *testing.T) *nccl.Comm {
	t.Helper()
	engine(t) // skips without a GPU
	comms, err := nccl.NewGroup([]int{0})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { comms[0].Close() })
	return comms[0]
}

// stepOnGPU binds r's weights (and target and bias) to the engine and runs one training step
// (forward, backward, Adam clipping by maxNorm, UpdateExpertBias), returning Y, the gradients
// and the weights after the step, as host copies, and the gradient norm. With comm != nil the
// replicated weights' gradients are summed by ep.SumGradients and clipped by ep.ClipGradNorm
// (Adam's own MaxGradNorm 0), and it also returns the learnables' gradients before and after
// that clip.
func stepOnGPU(t *testing.T, r *devRig, comm ep.Communicator, maxNorm float64) (y []float64, grads, weights [][]float64, norm float64, pre, clipped [][]float64) {
	t.Helper()
	eng := engine(t)
	bind := append(G.Nodes{r.target}, r.params...)
	if r.l.Bias != nil {
		bind = append(bind, r.l.Bias)
	}
	if err := eng.Bind(bind...); err != nil {
		t.Fatal(err)
	}
	m := G.NewTapeMachine(r.g, G.WithEngine(eng))
	defer m.Close()
	opt := train.NewAdam(1e-2)
	defer opt.Release()
	if comm == nil {
		opt.MaxGradNorm = maxNorm
	}
	learnGrads := func() (gs [][]float64, err error) {
		for _, w := range r.l.Learnables() {
			g, err := w.Grad()
			if err != nil {
				return nil, err
			}
			gs = append(gs, hostF64(t, g))
		}
		return gs, nil
	}
	grads = make([][]float64, len(r.gv))
	err := train.Step(m, opt, r.l.Learnables(), func() error {
		if comm != nil {
			// On one rank the sums are the rank's own values.
			if err := ep.SumGradients(comm, r.l.Replicated()...); err != nil {
				return err
			}
		}
		y = hostF64(t, r.yv)
		for i := range r.gv {
			grads[i] = hostF64(t, r.gv[i])
		}
		if comm != nil {
			var err error
			if pre, err = learnGrads(); err != nil {
				return err
			}
			if norm, err = ep.ClipGradNorm(comm, maxNorm, r.l.Learnables(), r.l.Replicated()); err != nil {
				return err
			}
			if clipped, err = learnGrads(); err != nil {
				return err
			}
		}
		if r.l.Bias != nil {
			if err := r.l.UpdateExpertBias(r.cv); err != nil {
				return err
			}
		}
		return eng.Status()
	})
	if err != nil {
		t.Fatal(err)
	}
	if comm == nil {
		norm = opt.GradNorm()
	}
	for _, w := range r.l.Learnables() {
		weights = append(weights, hostF64(t, w.Value()))
	}
	if r.l.Bias != nil {
		weights = append(weights, hostF64(t, r.l.Bias.Value()))
	}
	return y, grads, weights, norm, pre, clipped
}

// TestExpertParallelOneNCCLRankGPUEqualsLayer: moe.NewExpertParallel on the device engine with
// one NCCL rank (the expert-parallel plan, dispatch and combine on GPU-resident values, the
// guarded top-k and send plan) takes the same training step as the single-GPU layer New
// makes from the same config: output, every gradient and the weights after Adam; clipped by
// ep.SumGradients and ep.ClipGradNorm on the device as Adam's MaxGradNorm clips the other.
func TestExpertParallelOneNCCLRankGPUEqualsLayer(t *testing.T) {
	comm := oneNCCLRank(t)
	const T, maxNorm = 64, 1e-3 // below every case's gradient norm: both steps clip
	for i, cfg := range deviceCases() {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			tol := 1e-6 // the same ops on the same rows; cuBLAS may pick another algorithm
			if cfg.Dtype == tensor.Float64 {
				tol = 1e-13
			}
			ref := newRig(t, cfg, T, 7)
			epr := newRigOf(t, cfg, T, 7, func(g *G.ExprGraph) (*Layer, error) { return NewExpertParallel(g, "moe", cfg, comm) })
			yr, gr, wr, nr, _, _ := stepOnGPU(t, ref, nil, maxNorm)
			ye, ge, we, ne, pre, clipped := stepOnGPU(t, epr, comm, maxNorm)
			// ep.ClipGradNorm's norm is the optimiser's on the single-GPU layer (within the
			// gradients' tolerance), and it scaled every gradient by maxNorm/(norm+1e-6).
			if !(nr > maxNorm) {
				t.Fatalf("norm %v does not exceed maxNorm %v: nothing clipped", nr, maxNorm)
			}
			if d := math.Abs(ne-nr) / nr; d > 10*tol {
				t.Errorf("ep.ClipGradNorm's norm %v, the optimiser's %v", ne, nr)
			}
			scale := maxNorm / (ne + 1e-6)
			for i := range pre {
				want := make([]float64, len(pre[i]))
				for j, v := range pre[i] {
					want[j] = v * scale
				}
				if d := relDiff(clipped[i], want); d > 1e-6 || math.IsNaN(d) {
					t.Errorf("learnable %d clipped by ep.ClipGradNorm: relative diff %g from the gradient times %g", i, d, scale)
				}
			}
			if d := relDiff(ye, yr); d > tol {
				t.Errorf("Y: relative diff %g > %g", d, tol)
			}
			if len(ge) != len(gr) || len(we) != len(wr) {
				t.Fatalf("%d gradients and %d weights, want %d and %d", len(ge), len(we), len(gr), len(wr))
			}
			for i, p := range ref.params {
				if d := relDiff(ge[i], gr[i]); d > 10*tol || math.IsNaN(d) {
					t.Errorf("d/d%s: relative diff %g > %g", p.Name(), d, 10*tol)
				}
			}
			for i := range wr {
				if d := relDiff(we[i], wr[i]); d > 10*tol || math.IsNaN(d) {
					t.Errorf("weight %d after the step: relative diff %g", i, d)
				}
			}
		})
	}
}

// TestExpertParallelOneNCCLRankAbortsOnError: a NaN in the input of an expert-parallel layer
// on the device engine with one NCCL rank fails the step at the plan's host sync with an
// error naming the NaN (the GPU top-k flags it), and aborts the NCCL communicator (ncclCommAbort): its next collective returns
// ErrAborted at once, as every other rank's would. A step run through ep.RunRank whose own
// code fails aborts it the same way.
func TestExpertParallelOneNCCLRankAbortsOnError(t *testing.T) {
	cfg := Config{Hidden: 32, FFN: 48, Experts: 8, TopK: 2, Seed: 1}
	const T = 16
	t.Run("NaN at the top-k", func(t *testing.T) {
		comm := oneNCCLRank(t)
		r := newRigOf(t, cfg, T, 7, func(g *G.ExprGraph) (*Layer, error) { return NewExpertParallel(g, "moe", cfg, comm) })
		x := r.x.Value().(*tensor.Dense).Data().([]float32)
		x[3*cfg.Hidden+5] = float32(math.NaN()) // token 3
		eng := engine(t)
		if err := eng.Bind(append(G.Nodes{r.target}, r.params...)...); err != nil {
			t.Fatal(err)
		}
		m := G.NewTapeMachine(r.g, G.WithEngine(eng))
		defer m.Close()
		done := make(chan error, 1)
		go func() { done <- m.RunAll() }()
		var err error
		select {
		case err = <-done:
		case <-time.After(2 * time.Minute):
			t.Fatal("the step did not return within 2 minutes")
		}
		eng.EndStep()
		// The GPU top-k flags a NaN score (kernels.StatusError) instead of failing; the
		// expert-parallel plan's host copy reports it and aborts.
		if err == nil || !strings.Contains(err.Error(), "a top-k selection score was NaN") {
			t.Fatalf("step error %v, want the NaN score flagged by the GPU top-k", err)
		}
		if _, err := comm.ExchangeCounts([]int32{1}); !errors.Is(err, ep.ErrAborted) {
			t.Errorf("a collective after the failed step: %v, want ErrAborted", err)
		}
	})
	t.Run("RunRank with an injected error", func(t *testing.T) {
		comm := oneNCCLRank(t)
		injected := errors.New("injected: rank 0 could not read its batch")
		if err := ep.RunRank(comm, func() error { return injected }); !errors.Is(err, injected) {
			t.Fatalf("RunRank: %v", err)
		}
		if _, err := comm.ExchangeCounts([]int32{1}); !errors.Is(err, ep.ErrAborted) || !strings.Contains(err.Error(), "closed or aborted") {
			t.Errorf("a collective after the abort: %v, want ErrAborted", err)
		}
	})
}
