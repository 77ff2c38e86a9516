//go:build gomoecuda

package kernels_test

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"time"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"
)

// The GPU benchmark table: go test -tags gomoecuda -run TestCUDABenchTable -v ./kernels/ -gomoe.bench
// It times each kernel with CUDA events (mean of -gomoe.iters launches after 3 warm-ups) on the
// docs/design.md shapes and compares it with cuMemcpyDtoD moving the same bytes in the same run
// (a copy of n bytes moves 2n: read and write).

var (
	gpuBenchFlag  = flag.Bool("gomoe.bench", false, "run the GPU benchmark table")
	gpuBenchIters = flag.Int("gomoe.iters", 20, "timed launches per measurement")
	gpuBenchOut   = flag.String("gomoe.benchout", "", "also write the table to this file")
	gpuShapesFlag = flag.String("gomoe.shapes", "dsv3,te16k,mixtral,top1", "shapes to run")
	gpuModes      = flag.Bool("gomoe.modes", false, "also compare the store policies of the scatter kernels, the bfloat16 dprobs variants and plain launches")
	gpuGMMOnly    = flag.String("gomoe.gmm", "", `TestCUDAGroupedMatMulBench: only the cases whose "shape route dtype pass" contains this, on the layer's path only (for a profiler)`)
)

type gpuBenchShapeT struct {
	name       string
	T, E, K, H int
}

var gpuBenchShapes = []gpuBenchShapeT{
	{"dsv3", 4096, 256, 8, 7168},
	{"te16k", 16384, 128, 6, 4096},
	{"mixtral", 4096, 8, 2, 4096},
	{"top1", 16384, 4, 1, 7168},
	{"qwen3", 4096, 128, 8, 2048}, // the layer benchmark's shape; not in the default list
}

// cuTimeIt returns the mean milliseconds of f over n launches, timed with CUDA events. The
// warm-up launches run inside Do too: f may call the cu package directly (cu.MemsetD32), which
// needs the context current on its OS thread.
func cuTimeIt(t *testing.T, n int, f func() error) float64 {
	t.Helper()
	var ms float64
	err := testCUDA.Do(func() error {
		for i := 0; i < 3; i++ {
			if err := f(); err != nil {
				return err
			}
		}
		start, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			return err
		}
		defer cu.DestroyEvent(&start)
		end, err := cu.MakeEvent(cu.DefaultEvent)
		if err != nil {
			return err
		}
		defer cu.DestroyEvent(&end)
		if err := start.Record(cu.Stream{}); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			if err := f(); err != nil {
				return err
			}
		}
		if err := end.Record(cu.Stream{}); err != nil {
			return err
		}
		if err := end.Synchronize(); err != nil {
			return err
		}
		ms, err = start.Elapsed(end)
		return err
	})
	cuMust(t, err)
	return ms / float64(n)
}

func TestCUDABenchTable(t *testing.T) {
	if !*gpuBenchFlag {
		t.Skip("run with -gomoe.bench")
	}
	dev, _ := cu.CurrentDevice()
	name, _ := dev.Name()
	var sb strings.Builder
	fmt.Fprintf(&sb, "GPU: %s, %s, %d timed launches each (CUDA events), A=1 dropless, random balanced routing\n\n", name, time.Now().UTC().Format("2006-01-02"), *gpuBenchIters)
	fmt.Fprintf(&sb, "| shape | dtype | kernel | ms | GB/s | copy GB/s | ratio to copy |\n|---|---|---|---:|---:|---:|---:|\n")
	want := map[string]bool{}
	for _, s := range strings.Split(*gpuShapesFlag, ",") {
		want[s] = true
	}
	for _, s := range gpuBenchShapes {
		if !want[s.name] {
			continue
		}
		for _, d := range []DType{F32, BF16} {
			gpuBenchOne(t, &sb, s, d)
		}
	}
	fmt.Print(sb.String())
	if *gpuBenchOut != "" {
		cuMust(t, os.WriteFile(*gpuBenchOut, []byte(sb.String()), 0o644))
	}
}

func gpuBenchOne(t *testing.T, sb *strings.Builder, s gpuBenchShapeT, d DType) {
	g := Geometry{T: s.T, K: s.K, E: s.E, A: 1}
	rng := rand.New(rand.NewPCG(1, uint64(s.T)))
	ids := cuBalancedIDs(0)(rng, g)
	probs := make([]float32, len(ids))
	for i := range probs {
		probs[i] = rng.Float32()
	}
	e := int64(d.Size())
	T, K, H, R := int64(s.T), int64(s.K), int64(s.H), int64(g.Rows())
	dIDs := cuUpload(t, ids)
	dProbs := cuUpload(t, probs)
	plan := cuAlloc(t, 4*int64(g.PlanLen()))
	work := cuAlloc(t, PlanWorkBytes(g))
	x := cuAlloc(t, T*H*e)
	xp := cuAlloc(t, R*H*e)
	y := cuAlloc(t, T*H*e)
	dyp := cuAlloc(t, R*H*e)
	dp := cuAlloc(t, T*K*4)
	copySrc := cuAlloc(t, (T*H*e+2*T*K*H*e)/2+16)
	copyDst := cuAlloc(t, (T*H*e+2*T*K*H*e)/2+16)
	// Fill the inputs with small finite values (bit patterns of 0x3c00 / 0x3c003c00).
	cuMust(t, testCUDA.Do(func() error {
		for _, b := range []cuDevBuf{x, xp} {
			if err := cu.MemsetD16(b.p, 0x3c00, b.n/2); err != nil {
				return err
			}
		}
		return nil
	}))
	buildPlan := func() error { return testCUDA.BuildPlan(g, plan.p, dIDs.p, 0, F32, work.p) }
	cuMust(t, buildPlan())
	cuMust(t, testCUDA.Status())

	copyMS := map[int64]float64{}
	copyGBs := func(bytes int64) float64 {
		n := bytes / 2
		if _, ok := copyMS[n]; !ok {
			copyMS[n] = cuTimeIt(t, *gpuBenchIters, func() error { return cu.MemcpyDtoD(copyDst.p, copySrc.p, n) })
		}
		return float64(bytes) / copyMS[n] / 1e6
	}
	row := func(kernel string, bytes int64, ms float64) {
		if bytes == 0 {
			fmt.Fprintf(sb, "| %s | %v | %s | %.4f | | | |\n", s.name, d, kernel, ms)
			return
		}
		gbs := float64(bytes) / ms / 1e6
		c := copyGBs(bytes)
		fmt.Fprintf(sb, "| %s | %v | %s | %.4f | %.0f | %.0f | %.1f %% |\n", s.name, d, kernel, ms, gbs, c, 100*gbs/c)
	}
	it := *gpuBenchIters
	permute := func() error { return testCUDA.PermuteForward(d, g, s.H, xp.p, x.p, plan.p) }
	planPermute := func() error {
		if err := buildPlan(); err != nil {
			return err
		}
		return permute()
	}
	planMS := cuTimeIt(t, it, buildPlan)
	permMS := cuTimeIt(t, it, permute)
	fmt.Fprintf(sb, "| %s | %v | plan build | %.4f | | | %.1f %% of permute fwd |\n", s.name, d, planMS, 100*planMS/permMS)
	row("permute fwd", T*H*e+T*K*H*e, permMS)
	row("permute bwd", T*K*H*e+T*H*e, cuTimeIt(t, it, func() error { return testCUDA.PermuteBackward(d, g, s.H, y.p, xp.p, plan.p) }))
	row("unpermute fwd", T*K*H*e+T*H*e, cuTimeIt(t, it, func() error { return testCUDA.UnpermuteForward(d, g, s.H, y.p, xp.p, dProbs.p, plan.p) }))
	row("unpermute bwd (rows+probs)", T*H*e+2*T*K*H*e, cuTimeIt(t, it, func() error {
		return testCUDA.UnpermuteBackward(d, g, s.H, dyp.p, dp.p, y.p, xp.p, dProbs.p, plan.p)
	}))
	row("unpermute bwd (rows only)", T*H*e+T*K*H*e, cuTimeIt(t, it, func() error {
		return testCUDA.UnpermuteBackward(d, g, s.H, dyp.p, 0, y.p, 0, dProbs.p, plan.p)
	}))
	probsOnly := func() error { return testCUDA.UnpermuteBackward(d, g, s.H, 0, dp.p, y.p, xp.p, dProbs.p, plan.p) }
	row("unpermute bwd (probs only)", T*H*e+T*K*H*e, cuTimeIt(t, it, probsOnly))
	wbuf := cuAlloc(t, T*H*e+T*K*H*e)
	row("write-only roofline (cuMemsetD32)", wbuf.n, cuTimeIt(t, it, func() error { return cu.MemsetD32(wbuf.p, 0, wbuf.n/4) }))
	row("plan + permute fwd", T*H*e+T*K*H*e, cuTimeIt(t, it, planPermute))
	// The same work captured as one CUDA graph of 10 repetitions (as a replayed training step
	// runs it): the GPU's time without the host's launch gaps.
	graphMS := func(f func() error) float64 {
		const reps = 10
		gr, err := testCUDA.Capture(func() error {
			for range reps {
				if err := f(); err != nil {
					return err
				}
			}
			return nil
		})
		cuMust(t, err)
		defer gr.Destroy()
		return cuTimeIt(t, it, gr.Launch) / reps
	}
	gPlan := graphMS(buildPlan)
	gPerm := graphMS(permute)
	fmt.Fprintf(sb, "| %s | %v | plan build (CUDA graph) | %.4f | | | %.1f %% of permute fwd (CUDA graph) |\n", s.name, d, gPlan, 100*gPlan/gPerm)
	row("permute fwd (CUDA graph)", T*H*e+T*K*H*e, gPerm)
	row("plan + permute fwd (CUDA graph)", T*H*e+T*K*H*e, graphMS(planPermute))
	if *gpuModes {
		// The same with plain launches instead of programmatic ones (launch_cuda.go; a CUDA
		// graph always has plain ones).
		was := SetProgrammaticLaunch(testCUDA, false)
		row("plan + permute fwd, plain launches", T*H*e+T*K*H*e, cuTimeIt(t, it, planPermute))
		SetProgrammaticLaunch(testCUDA, was)
		def := StoreMode()
		for _, m := range []int{0, 1, 4} {
			SetStoreMode(m)
			row(fmt.Sprintf("permute fwd smode=%d", m), T*H*e+T*K*H*e, cuTimeIt(t, it, permute))
		}
		for _, m := range []int{0, 1} {
			SetStoreMode(m)
			row(fmt.Sprintf("unpermute bwd rows smode=%d", m), T*H*e+T*K*H*e, cuTimeIt(t, it, func() error {
				return testCUDA.UnpermuteBackward(d, g, s.H, dyp.p, 0, y.p, 0, dProbs.p, plan.p)
			}))
		}
		SetStoreMode(def)
		if d == BF16 {
			for _, v := range BF16DotVariants {
				old := SetBF16DotVariant(v)
				row("unpermute bwd (rows+probs) "+v, T*H*e+2*T*K*H*e, cuTimeIt(t, it, func() error {
					return testCUDA.UnpermuteBackward(d, g, s.H, dyp.p, dp.p, y.p, xp.p, dProbs.p, plan.p)
				}))
				row("unpermute bwd (probs only) "+v, T*H*e+T*K*H*e, cuTimeIt(t, it, probsOnly))
				SetBF16DotVariant(old)
			}
			old := SetBF16DotBlocks(-1)
			row("unpermute bwd (rows+probs), a block per token", T*H*e+2*T*K*H*e, cuTimeIt(t, it, func() error {
				return testCUDA.UnpermuteBackward(d, g, s.H, dyp.p, dp.p, y.p, xp.p, dProbs.p, plan.p)
			}))
			row("unpermute bwd (probs only), a block per token", T*H*e+T*K*H*e, cuTimeIt(t, it, probsOnly))
			SetBF16DotBlocks(old)
		}
	}
	cuMust(t, testCUDA.Status())
}

// TestCUDALossBench times the loss kernels (CUDA events, mean of -gomoe.iters launches) at the
// issue's shapes: go test -tags gomoecuda -run TestCUDALossBench -v ./kernels/ -gomoe.bench
// Each line gives µs per call and the bandwidth of the one read of the [T,E] float32 input.
func TestCUDALossBench(t *testing.T) {
	if !*gpuBenchFlag {
		t.Skip("run with -gomoe.bench")
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for _, c := range []loCase{{"qwen3 B=1", 4096, 8, 128, 1}, {"qwen3 B=8", 4096, 8, 128, 8}, {"mixtral", 4096, 2, 8, 1}, {"16k E256", 16384, 8, 256, 1}} {
		ids, s := cuUpload(t, loIDs(rng, c.T, c.K, c.E)), cuUpload(t, loF32(loRand(rng, c.T*c.E, 1)))
		work := cuAlloc(t, max(BalanceLossWorkBytes(c.T, c.E, c.B), ZLossWorkBytes(c.T)))
		out, ds := cuAlloc(t, 4), cuAlloc(t, 4*int64(c.T*c.E))
		sm, dx := cuAlloc(t, 4*int64(c.T*c.E)), cuAlloc(t, 4*int64(c.T*c.E))
		n := *gpuBenchIters
		bytes := float64(4 * c.T * c.E)
		for _, k := range []struct {
			name string
			f    func() error
		}{
			{"balance fwd", func() error {
				return testCUDA.BalanceLossForward(F32, out.p, ids.p, s.p, work.p, c.T, c.K, c.E, c.B, 1e-3)
			}},
			{"balance bwd", func() error {
				return testCUDA.BalanceLossBackward(F32, ds.p, ids.p, work.p, 0, c.T, c.K, c.E, c.B, 1e-3, 1)
			}},
			{"router balance fwd (fused)", func() error {
				return testCUDA.RouterBalanceLossForward(F32, out.p, ids.p, s.p, work.p, c.T, c.K, c.E, c.B, 1e-3, RouterSoftmax)
			}},
			{"router balance bwd (fused)", func() error {
				return testCUDA.RouterBalanceLossBackward(F32, ds.p, ids.p, s.p, work.p, 0, c.T, c.K, c.E, c.B, 1e-3, 1, RouterSoftmax)
			}},
			{"router balance fwd (chain)", func() error {
				if err := testCUDA.RowForward(F32, RowSoftmax, sm.p, s.p, int64(c.T), c.E); err != nil {
					return err
				}
				return testCUDA.BalanceLossForward(F32, out.p, ids.p, sm.p, work.p, c.T, c.K, c.E, c.B, 1e-3)
			}},
			{"router balance bwd (chain)", func() error {
				if err := testCUDA.BalanceLossBackward(F32, ds.p, ids.p, work.p, 0, c.T, c.K, c.E, c.B, 1e-3, 1); err != nil {
					return err
				}
				return testCUDA.RowBackward(F32, RowSoftmax, dx.p, s.p, sm.p, ds.p, int64(c.T), c.E)
			}},
			{"z-loss fwd", func() error { return testCUDA.ZLossForward(F32, out.p, s.p, work.p, c.T, c.E, 1e-3) }},
			{"z-loss bwd", func() error { return testCUDA.ZLossBackward(F32, ds.p, s.p, 0, c.T, c.E, 1e-3, 1) }},
		} {
			ms := cuTimeIt(t, n, k.f)
			t.Logf("%-10s T=%d K=%d E=%d B=%d  %-26s %8.1f µs  %6.0f GB/s", c.name, c.T, c.K, c.E, c.B, k.name, ms*1e3, bytes/(ms*1e-3)/1e9)
		}
	}
}
