//go:build gomoecuda

// Command layerbench times the moe layer's forward and forward+backward on one GPU (device
// engine, tape machine, the grouped expert GEMMs and gomoe's kernels) at the benchmark shapes,
// for comparison with bench/torch_layer_bench.py run in the same session:
//
//	go run -tags gomoecuda ./bench/layerbench -shape qwen3 -json out.json
//	go run -tags gomoecuda ./bench/layerbench -shape mixtral -F 7168
//
// -dtype bf16 times a bfloat16 layer (float32 router, float32 accumulation in every kernel).
// The layer: router in float32, softmax over the chosen top-K logits (= softmax over all
// renormalised over the top K), SwiGLU experts, dropless. FLOPs are counted as the PyTorch
// script counts them: forward 6·R·H·F + 2·T·H·E (R = T·K), backward twice that.
//
// Every graph is timed two ways, each step's wall time:
//
//   - synced: each step launched on an idle GPU and waited for (a context sync inside the
//     timed interval, then the step's buffers recycled, as back to back; the kernels' status
//     words are read after it), the median of -iters, as a loop that reads its loss every step
//     runs;
//   - back to back: steps issued without waiting, the time per step in a steady stream: after
//     -warmup untimed steps issued the same way, 2·-iters steps ended by one sync, the wall time
//     over 2·-iters (the one start on an idle GPU and the one sync add about 0.1 ms to the run,
//     a few µs per step). This is what a loop that reads its loss only now and then gets, and
//     about what bench/torch_layer_bench.py's CUDA events time for torch once the GPU is the
//     bottleneck.
//
// A differential variant (runs of n and 2n steps, their difference over n) was tried and
// dropped: at the Mixtral shape the GPU runs at its power cap and the later steps of a long
// run are slower, so the difference measured the hottest steps only, several percent off the
// mean either way.
//
// On the grouped matmul's cuBLAS path (bfloat16 off Hopper, or H or F not a multiple of 8)
// each grouped matmul reads the plan's offsets on the host, so its steps are never back to back.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"runtime/pprof"
	"sort"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	gdev "github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/op"
)

type result struct {
	Shape         string `json:"shape"`
	T, H, F, E, K int
	Dtype         string `json:"dtype"`
	Device        string `json:"device"`
	Graph         bool   `json:"graph"` // times are CUDA graph replays
	// Synced and back-to-back times of the forward and the forward+backward (see the package
	// comment), and the TFLOP/s they give.
	FwdSyncedMs        float64 `json:"fwd_synced_ms"`
	FwdBwdSyncedMs     float64 `json:"fwdbwd_synced_ms"`
	FwdB2BMs           float64 `json:"fwd_b2b_ms"`
	FwdBwdB2BMs        float64 `json:"fwdbwd_b2b_ms"`
	TFlopsFwdSynced    float64 `json:"tflops_fwd_synced"`
	TFlopsFwdBwdSynced float64 `json:"tflops_fwdbwd_synced"`
	TFlopsFwdB2B       float64 `json:"tflops_fwd_b2b"`
	TFlopsFwdBwdB2B    float64 `json:"tflops_fwdbwd_b2b"`
	SetupSec           float64 `json:"setup_s"`
	// Parts of the forward+backward, each timed alone as its own graph (see breakdown).
	ExpertsSyncedMs float64 `json:"experts_fwdbwd_synced_ms"`
	RouteSyncedMs   float64 `json:"route_permute_fwdbwd_synced_ms"`
	RouterSyncedMs  float64 `json:"router_fwdbwd_synced_ms"`
	ExpertsB2BMs    float64 `json:"experts_fwdbwd_b2b_ms"`
	RouteB2BMs      float64 `json:"route_permute_fwdbwd_b2b_ms"`
	RouterB2BMs     float64 `json:"router_fwdbwd_b2b_ms"`
	// HostMs is the median time the host takes to issue one forward+backward (the tape
	// machine's run, before the wait for the GPU) in the synced runs; eager runs only.
	HostMs float64 `json:"host_fwdbwd_ms,omitempty"`
}

func main() {
	shape := flag.String("shape", "qwen3", "qwen3 (T=4096 H=2048 F=768 E=128 K=8), mixtral (T=4096 H=4096 F=14336 E=8 K=2) or custom")
	T := flag.Int("T", 0, "tokens (overrides the preset)")
	H := flag.Int("H", 0, "hidden size")
	F := flag.Int("F", 0, "expert FFN size")
	E := flag.Int("E", 0, "experts")
	K := flag.Int("K", 0, "experts per token")
	iters := flag.Int("iters", 20, "timed iterations")
	warmup := flag.Int("warmup", 3, "untimed iterations first")
	dtype := flag.String("dtype", "f32", "f32, bf16 (float32 router and accumulation) or f64")
	jsonOut := flag.String("json", "", "write the result as JSON to this file")
	replay := flag.Bool("graph", false, "time each graph (the layer and its parts) as replays of a CUDA graph captured once (device.Engine.Capture) instead of eager runs")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the timed forward+backward runs, synced and back to back (the host's side; back to back, the host also waits in the driver when the launch queue is full), to this file")
	flag.Parse()
	// Bad counts used to panic (-iters 0 indexed an empty list of times) or be ignored (a
	// negative size fell back to the preset's).
	for _, o := range []struct {
		name string
		v    int
	}{{"T", *T}, {"H", *H}, {"F", *F}, {"E", *E}, {"K", *K}} {
		if o.v < 0 {
			fail(fmt.Errorf("-%s %d: want a size >= 1 (0: the preset's)", o.name, o.v))
		}
	}
	if *iters < 1 || *warmup < 0 {
		fail(fmt.Errorf("-iters %d -warmup %d: want -iters >= 1 and -warmup >= 0", *iters, *warmup))
	}
	r := result{Shape: *shape, Dtype: *dtype, Graph: *replay}
	switch *shape {
	case "qwen3":
		r.T, r.H, r.F, r.E, r.K = 4096, 2048, 768, 128, 8
	case "mixtral":
		r.T, r.H, r.F, r.E, r.K = 4096, 4096, 14336, 8, 2
	case "custom":
		r.T, r.H, r.F, r.E, r.K = 1024, 512, 256, 16, 2
	default:
		fail(fmt.Errorf("unknown shape %q", *shape))
	}
	for _, o := range []struct{ v, p *int }{{T, &r.T}, {H, &r.H}, {F, &r.F}, {E, &r.E}, {K, &r.K}} {
		if *o.v > 0 {
			*o.p = *o.v
		}
	}
	dt := tensor.Float32
	switch *dtype {
	case "f32":
	case "f64":
		dt = tensor.Float64
	case "bf16":
		dt = bfloat16.Dtype
	default:
		fail(fmt.Errorf("dtype %q: want f32, bf16 or f64", *dtype))
	}
	if err := run(&r, dt, *iters, *warmup, *cpuProfile); err != nil {
		fail(err)
	}
	pct := func(ms float64) float64 { return 100 * ms / r.FwdBwdSyncedMs }
	fmt.Printf("  parts (fwd+bwd, each alone; synced / back to back): expert GEMMs + SwiGLU %.2f / %.2f ms (%.0f%% synced), router + top-k + softmax + plan + permute + combine %.2f / %.2f ms (%.0f%%; the router matmul and fused router alone %.2f / %.2f ms), whole minus these two parts %.2f ms synced (each part timed alone, so this can be below 0)\n",
		r.ExpertsSyncedMs, r.ExpertsB2BMs, pct(r.ExpertsSyncedMs), r.RouteSyncedMs, r.RouteB2BMs, pct(r.RouteSyncedMs),
		r.RouterSyncedMs, r.RouterB2BMs, r.FwdBwdSyncedMs-r.ExpertsSyncedMs-r.RouteSyncedMs)
	mode := "eager"
	if r.Graph {
		mode = "CUDA graph replays"
	}
	host := ""
	if !r.Graph {
		host = fmt.Sprintf("; the host issues a fwd+bwd in %.2f ms", r.HostMs)
	}
	fmt.Printf("gomoe layer (%s) %s T=%d H=%d F=%d E=%d K=%d %s on %s: synced: fwd %.2f ms (%.1f TFLOP/s), fwd+bwd %.2f ms (%.1f TFLOP/s); back to back: fwd %.2f ms (%.1f TFLOP/s), fwd+bwd %.2f ms (%.1f TFLOP/s)%s; setup %.1f s\n",
		mode, r.Shape, r.T, r.H, r.F, r.E, r.K, r.Dtype, r.Device, r.FwdSyncedMs, r.TFlopsFwdSynced, r.FwdBwdSyncedMs, r.TFlopsFwdBwdSynced,
		r.FwdB2BMs, r.TFlopsFwdB2B, r.FwdBwdB2BMs, r.TFlopsFwdBwdB2B, host, r.SetupSec)
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(r, "", "  ")
		if err := os.WriteFile(*jsonOut, b, 0o644); err != nil {
			fail(err)
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "layerbench:", err)
	os.Exit(1)
}

func randDense(rng *rand.Rand, dt tensor.Dtype, shape ...int) *tensor.Dense {
	n := 1
	for _, s := range shape {
		n *= s
	}
	switch dt {
	case tensor.Float64:
		b := make([]float64, n)
		for i := range b {
			b[i] = rng.NormFloat64()
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	case bfloat16.Dtype:
		b := make([]bfloat16.BFloat16, n)
		for i := range b {
			b[i] = bfloat16.FromFloat32(float32(rng.NormFloat64()))
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
	}
	b := make([]float32, n)
	for i := range b {
		b[i] = float32(rng.NormFloat64())
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(b))
}

// graph builds the layer on x (and, with grad, the backward from dy).
func graph(r *result, dt tensor.Dtype, grad bool) (*G.ExprGraph, *moe.Layer, *G.Node, *G.Node, error) {
	g := G.NewGraph()
	cfg := moe.Config{Hidden: r.H, FFN: r.F, Experts: r.E, TopK: r.K, Dtype: dt, RouterDtype: tensor.Float32, Seed: 1}
	if dt == tensor.Float64 {
		cfg.RouterDtype = dt
	}
	l, err := moe.New(g, "moe", cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	x := G.NewMatrix(g, dt, G.WithShape(r.T, r.H), G.WithName("x"))
	out, err := l.Forward(x)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var dy *G.Node
	if grad {
		dy = G.NewMatrix(g, dt, G.WithShape(r.T, r.H), G.WithName("dy"))
		if _, err := G.Backpropagate(G.Nodes{out.Y}, G.Nodes{dy}, append(l.Learnables(), x)); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	return g, l, x, dy, nil
}

func run(r *result, dt tensor.Dtype, iters, warmup int, cpuProfile string) error {
	start := time.Now()
	eng, err := gdev.New(0)
	if err != nil {
		return err
	}
	defer eng.Close()
	r.Device = eng.String()
	rng := rand.New(rand.NewSource(2))
	gb, lb, xb, dyb, err := graph(r, dt, true)
	if err != nil {
		return err
	}
	xd, err := eng.CopyIn(randDense(rng, dt, r.T, r.H))
	if err != nil {
		return err
	}
	dyd, err := eng.CopyIn(randDense(rng, dt, r.T, r.H))
	if err != nil {
		return err
	}
	if err := eng.Bind(lb.Learnables()...); err != nil {
		return err
	}
	if err := G.Let(xb, xd); err != nil {
		return err
	}
	if err := G.Let(dyb, dyd); err != nil {
		return err
	}
	// The forward-only graph shares the device weights.
	gf, lf, xf, _, err := graph(r, dt, false)
	if err != nil {
		return err
	}
	for i, n := range lf.Learnables() {
		if err := G.Let(n, lb.Learnables()[i].Value()); err != nil {
			return err
		}
	}
	if err := G.Let(xf, xd); err != nil {
		return err
	}
	r.SetupSec = time.Since(start).Seconds()

	fwdFlops := 6*float64(r.T*r.K)*float64(r.H)*float64(r.F) + 2*float64(r.T)*float64(r.H)*float64(r.E)
	var hostMs []float64 // the host's issue times of the last time1 call (eager)
	time1 := func(g *G.ExprGraph) (timing, error) {
		hostMs = hostMs[:0]
		vm := G.NewTapeMachine(g, G.WithEngine(eng))
		defer vm.Close()
		step, cleanup := vm.RunAll, func() { vm.Reset(); eng.EndStep() }
		if r.Graph {
			// One eager run makes the pool's blocks and the GEMM parameters; then the run is
			// captured once and replayed.
			err := vm.RunAll()
			cleanup()
			if err == nil {
				err = eng.Status()
			}
			if err != nil {
				return timing{}, err
			}
			cg, err := eng.Capture(vm.RunAll)
			vm.Reset()
			if err != nil {
				return timing{}, err
			}
			defer cg.Close()
			step, cleanup = cg.Replay, func() {}
		}
		// Each step alone: launched on an idle GPU, waited for, and its buffers recycled (the
		// cleanup is part of every step, as in the back-to-back loop below and as torch's
		// timed iteration frees its graph and clears its gradients).
		var ms []float64
		for i := 0; i < warmup+iters; i++ {
			t0 := time.Now()
			if err := step(); err != nil {
				return timing{}, err
			}
			issued := time.Since(t0)
			if err := eng.Sync(); err != nil {
				return timing{}, err
			}
			cleanup()
			took := time.Since(t0)
			if err := eng.Status(); err != nil {
				return timing{}, err
			}
			if i >= warmup {
				ms = append(ms, float64(took.Microseconds())/1000)
				hostMs = append(hostMs, float64(issued.Microseconds())/1000)
			}
		}
		// Steps back to back: n steps, one wait after the last. Every step's work is on the
		// engine's one stream, so a step's recycled buffers are reused in stream order.
		stream := func(n int) (time.Duration, error) {
			t0 := time.Now()
			for i := 0; i < n; i++ {
				if err := step(); err != nil {
					return 0, err
				}
				cleanup()
			}
			if err := eng.Sync(); err != nil {
				return 0, err
			}
			took := time.Since(t0)
			return took, eng.Status()
		}
		if _, err := stream(warmup); err != nil {
			return timing{}, err
		}
		took, err := stream(2 * iters)
		if err != nil {
			return timing{}, err
		}
		b2b := float64(took.Microseconds()) / 1000 / float64(2*iters)
		return timing{Ms: median(ms), B2BMs: b2b}, nil
	}
	tf, err := time1(gf)
	if err != nil {
		return fmt.Errorf("forward: %w", err)
	}
	r.FwdSyncedMs, r.FwdB2BMs = tf.Ms, tf.B2BMs
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	tfb, err := time1(gb)
	r.FwdBwdSyncedMs, r.FwdBwdB2BMs = tfb.Ms, tfb.B2BMs
	if cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		return fmt.Errorf("forward+backward: %w", err)
	}
	if !r.Graph {
		r.HostMs = median(hostMs)
	}
	if err := breakdown(r, dt, eng, lb, xd, dyd, rng, time1); err != nil {
		return fmt.Errorf("breakdown: %w", err)
	}
	r.TFlopsFwdSynced = fwdFlops / (r.FwdSyncedMs * 1e-3) / 1e12
	r.TFlopsFwdBwdSynced = 3 * fwdFlops / (r.FwdBwdSyncedMs * 1e-3) / 1e12
	r.TFlopsFwdB2B = fwdFlops / (r.FwdB2BMs * 1e-3) / 1e12
	r.TFlopsFwdBwdB2B = 3 * fwdFlops / (r.FwdBwdB2BMs * 1e-3) / 1e12
	return nil
}

// breakdown times parts of the layer's forward+backward as graphs of their own, with the
// layer's device weights: the expert FFNs (two grouped GEMMs, gate and up as one, and SwiGLU,
// on rows permuted by a plan of uniformly random ids), the routing and data movement (router
// matmul, the fused router's top-k and softmax of the chosen logits, plan, permute,
// combine-unpermute, without experts) and, inside that, the router alone (its matmul and the
// fused router). What is left of the whole layer's time is gradient sums and Gorgonia's own
// work.
func breakdown(r *result, dt tensor.Dtype, eng *gdev.Engine, l *moe.Layer, xd, dyd *tensor.Dense, rng *rand.Rand, time1 func(*G.ExprGraph) (timing, error)) error {
	geo := kernels.Geometry{T: r.T, K: r.K, E: r.E, A: 1, Mode: kernels.Dropless}
	// Experts.
	{
		g := G.NewGraph()
		ids := make([]int32, r.T*r.K)
		for t := 0; t < r.T; t++ {
			for k, e := range rng.Perm(r.E)[:r.K] {
				ids[t*r.K+k] = int32(e)
			}
		}
		idd, err := eng.CopyIn(tensor.New(tensor.WithShape(r.T, r.K), tensor.WithBacking(ids)))
		if err != nil {
			return err
		}
		idn := G.NewMatrix(g, tensor.Int32, G.WithShape(r.T, r.K), G.WithName("ids"), G.WithValue(idd))
		p, err := op.NewPlan(idn, nil, geo)
		if err != nil {
			return err
		}
		R := p.Rows()
		xp := G.NewMatrix(g, dt, G.WithShape(R, r.H), G.WithName("xp"), G.WithValue(mustCopy(eng, randDense(rng, dt, R, r.H))))
		w1 := G.NewTensor(g, dt, 3, G.WithShape(r.E, r.H, 2*r.F), G.WithName("w1"), G.WithValue(l.W1.Value()))
		w2 := G.NewTensor(g, dt, 3, G.WithShape(r.E, r.F, r.H), G.WithName("w2"), G.WithValue(l.W2.Value()))
		z, err := op.GroupedMatMul(xp, w1, p)
		if err != nil {
			return err
		}
		h, err := op.SwiGLUPacked(z)
		if err != nil {
			return err
		}
		yp, err := op.GroupedMatMul(h, w2, p)
		if err != nil {
			return err
		}
		dyp := G.NewMatrix(g, dt, G.WithShape(R, r.H), G.WithName("dyp"), G.WithValue(mustCopy(eng, randDense(rng, dt, R, r.H))))
		if _, err := G.Backpropagate(G.Nodes{yp}, G.Nodes{dyp}, G.Nodes{xp, w1, w2}); err != nil {
			return err
		}
		t, err := time1(g)
		if err != nil {
			return err
		}
		r.ExpertsSyncedMs, r.ExpertsB2BMs = t.Ms, t.B2BMs
	}
	// Routing and data movement, and the router alone (its matmul and the fused router).
	t, err := timeRouting(r, dt, l, xd, dyd, geo, true, rng, eng, time1)
	if err != nil {
		return err
	}
	r.RouteSyncedMs, r.RouteB2BMs = t.Ms, t.B2BMs
	if t, err = timeRouting(r, dt, l, xd, dyd, geo, false, rng, eng, time1); err != nil {
		return err
	}
	r.RouterSyncedMs, r.RouterB2BMs = t.Ms, t.B2BMs
	return nil
}

// timeRouting times the routing part's forward and backward as a graph of its own: the router
// matmul (as the layer does it) and the fused router (RouterTopK,
// RouterProbs), then with moves the plan, permute and combine-unpermute (backward from dY),
// else nothing more (backward from a random dprobs).
func timeRouting(r *result, dt tensor.Dtype, l *moe.Layer, xd, dyd *tensor.Dense, geo kernels.Geometry, moves bool,
	rng *rand.Rand, eng *gdev.Engine, time1 func(*G.ExprGraph) (timing, error)) (timing, error) {
	g := G.NewGraph()
	x := G.NewMatrix(g, dt, G.WithShape(r.T, r.H), G.WithName("x"), G.WithValue(xd))
	rdt := l.Router.Dtype()
	router := G.NewMatrix(g, rdt, G.WithShape(r.H, r.E), G.WithName("router"), G.WithValue(l.Router.Value()))
	logits, err := moe.RouterLogits(x, router)
	if err != nil {
		return timing{}, err
	}
	ro := op.RouterOpts{Score: kernels.RouterSoftmax}
	ids, err := op.RouterTopK(logits, r.K, ro)
	if err != nil {
		return timing{}, err
	}
	probs, err := op.RouterProbs(logits, ids, ro)
	if err != nil {
		return timing{}, err
	}
	if !moves {
		dp := G.NewMatrix(g, rdt, G.WithShape(r.T, r.K), G.WithName("dprobs"), G.WithValue(mustCopy(eng, randDense(rng, rdt, r.T, r.K))))
		if _, err := G.Backpropagate(G.Nodes{probs}, G.Nodes{dp}, G.Nodes{x, router}); err != nil {
			return timing{}, err
		}
		return time1(g)
	}
	if dt != bfloat16.Dtype { // bfloat16 data combines with float32 probs
		if probs, err = op.Cast(probs, dt); err != nil {
			return timing{}, err
		}
	}
	p, err := op.NewPlan(ids, nil, geo)
	if err != nil {
		return timing{}, err
	}
	xp, err := op.Permute(x, p)
	if err != nil {
		return timing{}, err
	}
	y, err := op.Unpermute(xp, probs, p)
	if err != nil {
		return timing{}, err
	}
	dy := G.NewMatrix(g, dt, G.WithShape(r.T, r.H), G.WithName("dy"), G.WithValue(dyd))
	if _, err := G.Backpropagate(G.Nodes{y}, G.Nodes{dy}, G.Nodes{x, router}); err != nil {
		return timing{}, err
	}
	return time1(g)
}

// timing is one graph's time per step, measured two ways (see result).
type timing struct {
	Ms    float64 // median of steps each launched on an idle GPU and waited for
	B2BMs float64 // per step, steps issued back to back with one wait after the last
}

// median sorts s and returns its median, the mean of the two middle values for an even count,
// as bench/torch_layer_bench.py takes it (the element at len/2 alone is the upper of the two).
func median(s []float64) float64 {
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func mustCopy(eng *gdev.Engine, t *tensor.Dense) *tensor.Dense {
	d, err := eng.CopyIn(t)
	if err != nil {
		fail(err)
	}
	return d
}
