package moe

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/train"
)

// epRun holds what a test compares: Y, the input gradient and the weight gradients (expert
// weights: this rank's slice; replicated weights: summed over the ranks by ep.SumGradients).
type epRun struct {
	y, dx  []float64
	dw     map[string][]float64
	counts []float64
	norm   float64 // the gradient norm before clipping (maxNorm > 0)
}

func epFloats(v G.Value) []float64 {
	switch d := v.Data().(type) {
	case []float32:
		o := make([]float64, len(d))
		for i, x := range d {
			o[i] = float64(x)
		}
		return o
	case []float64:
		return append([]float64(nil), d...)
	}
	panic(fmt.Sprintf("epFloats: %T", v.Data()))
}

// epRunLayer builds layer l's graph g on x [T,H] with cost Σ Y⊙rw, runs it, sums the
// replicated weights' gradients over the ranks of c (nil: one rank), clips the gradients by
// their global norm when maxNorm > 0 (ep.ClipGradNorm; one rank: train.ClipGradNorm) and
// returns the run.
func epRunLayer(g *G.ExprGraph, l *Layer, x, rw []float64, T int, c ep.Communicator, maxNorm float64) (epRun, error) {
	H := l.cfg.Hidden
	dt := l.cfg.Dtype
	mk := func(name string, v []float64) *G.Node {
		var t *tensor.Dense
		if dt == tensor.Float32 {
			b := make([]float32, len(v))
			for i, f := range v {
				b[i] = float32(f)
			}
			t = tensor.New(tensor.WithShape(T, H), tensor.WithBacking(b))
		} else {
			t = tensor.New(tensor.WithShape(T, H), tensor.WithBacking(append([]float64(nil), v...)))
		}
		return G.NewMatrix(g, dt, G.WithShape(T, H), G.WithName(name), G.WithValue(t))
	}
	xn, rn := mk("x", x), mk("rw", rw)
	out, err := l.Forward(xn)
	if err != nil {
		return epRun{}, err
	}
	cost, err := G.Sum(G.Must(G.HadamardProd(out.Y, rn)))
	if err != nil {
		return epRun{}, err
	}
	wrt := append(G.Nodes{xn}, l.Learnables()...)
	grads, err := G.Grad(cost, wrt...)
	if err != nil {
		return epRun{}, err
	}
	var yv G.Value
	G.Read(out.Y, &yv)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return epRun{}, err
	}
	var norm float64
	if c != nil {
		if err := ep.SumGradients(c, l.Replicated()...); err != nil {
			return epRun{}, err
		}
		if maxNorm > 0 {
			if norm, err = ep.ClipGradNorm(c, maxNorm, l.Learnables(), l.Replicated()); err != nil {
				return epRun{}, err
			}
		}
	} else if maxNorm > 0 {
		vgs := make([]G.ValueGrad, 0, 5)
		for _, w := range l.Learnables() {
			vgs = append(vgs, w)
		}
		if norm, err = train.ClipGradNorm(vgs, maxNorm); err != nil {
			return epRun{}, err
		}
	}
	run := epRun{y: epFloats(yv), dx: epFloats(grads[0].Value()), dw: map[string][]float64{}, norm: norm}
	for i, n := range l.Learnables() {
		run.dw[n.Name()] = epFloats(grads[i+1].Value())
	}
	return run, nil
}

// TestExpertParallelLayer: the layer sharded over N in-process ranks gives the single-rank
// layer's Y, input gradient and expert-weight gradients, and its replicated weights'
// gradients, summed over the ranks by ep.SumGradients, are the single-rank ones on every rank;
// clipped by ep.ClipGradNorm, the gradients and the norm are the single-rank layer's clipped by
// train.ClipGradNorm, the norm the same bits on every rank.
func TestExpertParallelLayer(t *testing.T) {
	cfgs := []Config{
		{Hidden: 4, FFN: 3, Experts: 8, TopK: 2, Dtype: tensor.Float64, Seed: 3},
		{Hidden: 3, FFN: 2, Experts: 4, TopK: 2, Dtype: tensor.Float64, Activation: GELU, Align: 2, ProbsOnActivation: true, SharedFFN: 2, Seed: 4},
		{Hidden: 3, FFN: 2, Experts: 4, TopK: 1, Dtype: tensor.Float64, Score: Sigmoid, CapacityFactor: 8, DropPolicy: DropByPosition, Seed: 5},
	}
	for ci, cfg := range cfgs {
		for _, run := range []struct {
			n       int
			maxNorm float64
		}{{1, 0}, {2, 0}, {4, 0}, {2, 0.05}, {4, 0.05}} {
			n, maxNorm := run.n, run.maxNorm
			if cfg.Experts%n != 0 {
				continue
			}
			t.Run(fmt.Sprintf("cfg%d/N%d/clip%g", ci, n, maxNorm), func(t *testing.T) {
				const T = 6
				rng := rand.New(rand.NewSource(int64(ci*10 + n)))
				H := cfg.Hidden
				x, rw := make([]float64, n*T*H), make([]float64, n*T*H)
				for i := range x {
					x[i], rw[i] = rng.NormFloat64(), rng.NormFloat64()
				}
				g := G.NewGraph()
				single, err := New(g, "moe", cfg)
				if err != nil {
					t.Fatal(err)
				}
				want, err := epRunLayer(g, single, x, rw, n*T, nil, maxNorm)
				if err != nil {
					t.Fatal(err)
				}
				runs := make([]epRun, n)
				onEPRanks(t, n, cfg, func(c ep.Communicator, g *G.ExprGraph, l *Layer) error {
					r := c.Rank()
					var err error
					runs[r], err = epRunLayer(g, l, x[r*T*H:(r+1)*T*H], rw[r*T*H:(r+1)*T*H], T, c, maxNorm)
					return err
				})
				// The data movement is bitwise (package ep's tests); here the router's
				// gemm over T rows instead of N·T rows may round differently in gonum, so
				// compare to a tight tolerance.
				exact := func(what string, got, want []float64) {
					t.Helper()
					if len(got) != len(want) {
						t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
					}
					for i := range got {
						if !(math.Abs(got[i]-want[i]) <= 1e-12*math.Max(1, math.Abs(want[i]))) {
							t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
						}
					}
				}
				if maxNorm > 0 {
					if !(want.norm > maxNorm) {
						t.Fatalf("norm %v does not exceed maxNorm %v: nothing to clip", want.norm, maxNorm)
					}
					for r, run := range runs {
						if run.norm != runs[0].norm {
							t.Fatalf("rank %d's norm %v, rank 0's %v: the ranks must agree bit for bit", r, run.norm, runs[0].norm)
						}
					}
					exact("norm", []float64{runs[0].norm}, []float64{want.norm})
				}
				var y, dx []float64
				for _, run := range runs {
					y, dx = append(y, run.y...), append(dx, run.dx...)
				}
				exact("Y", y, want.y)
				exact("dx", dx, want.dx)
				for name, w := range want.dw {
					switch name {
					case "moe.w1", "moe.w2": // sharded: concatenate the ranks' slices
						var got []float64
						for _, run := range runs {
							got = append(got, run.dw[name]...)
						}
						exact("d"+name, got, w)
					default: // replicated: every rank holds the sum
						for r, run := range runs {
							exact(fmt.Sprintf("rank %d's d%s", r, name), run.dw[name], w)
						}
					}
				}
			})
		}
	}
}

func TestNewExpertParallelErrors(t *testing.T) {
	grp3, err := ep.NewGroup(3)
	if err != nil {
		t.Fatal(err)
	}
	c3, err := grp3.Comm(0)
	if err != nil {
		t.Fatal(err)
	}
	grp2, err := ep.NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := grp2.Comm(1)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2}
	taken := G.NewGraph()
	if _, err := New(taken, "moe", cfg); err != nil {
		t.Fatal(err)
	}
	takenNodes := len(taken.AllNodes())
	cases := []struct {
		name string
		g    *G.ExprGraph
		cfg  Config
		c    ep.Communicator
		want []string
	}{
		{"E=4 on 3 ranks", G.NewGraph(), cfg, c3, []string{"Experts=4", "N=3"}},
		{"nil communicator", G.NewGraph(), cfg, nil, []string{"communicator is nil"}},
		{"nil pointer communicator", G.NewGraph(), cfg, (*nilComm)(nil), []string{"communicator is a nil *moe.nilComm"}},
		{"nil graph", nil, cfg, c2, []string{"nil graph"}},
		{"bad config", G.NewGraph(), Config{}, c2, []string{"Hidden"}},
		{"name taken", taken, cfg, c2, []string{"already has a layer"}},
		{"bfloat16", G.NewGraph(), Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Dtype: bfloat16.Dtype}, c2, []string{"expert parallelism takes float32 or float64"}},
	}
	for _, tc := range cases {
		var l *Layer
		err := noPanic(t, func() error {
			var err error
			l, err = NewExpertParallel(tc.g, "moe", tc.cfg, tc.c)
			return err
		})
		if l != nil {
			t.Errorf("%s: got a layer", tc.name)
		}
		wantErrContains(t, err, tc.want...)
	}
	if n := len(taken.AllNodes()); n != takenNodes {
		t.Errorf("the taken graph has %d nodes after the failed call, want %d", n, takenNodes)
	}
}

// TestExpertParallelOneRankPerGraph: layers of two ranks of one group in one graph are refused
// when the second's Forward builds its plan (run, their collectives would wait for each other);
// two layers of one rank share a graph.
func TestExpertParallelOneRankPerGraph(t *testing.T) {
	grp, err := ep.NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	c0, _ := grp.Comm(0)
	c1, _ := grp.Comm(1)
	cfg := Config{Hidden: 2, FFN: 2, Experts: 4, TopK: 2, Dtype: tensor.Float64}
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("x"))
	forward := func(name string, c ep.Communicator) error {
		l, err := NewExpertParallel(g, name, cfg, c)
		if err != nil {
			return err
		}
		_, err = l.Forward(x)
		return err
	}
	if err := forward("a", c0); err != nil {
		t.Fatal(err)
	}
	if err := forward("b", c0); err != nil {
		t.Fatalf("a second layer of rank 0: %v", err)
	}
	wantErrContains(t, forward("c", c1), "rank 0's plan", "graph per rank")
}

// TestExpertParallelShardMemory: each rank's W1 and W2 hold only its E/N experts (they used
// to be slices of a copy of all E experts' weights, which every rank kept alive: N in-process
// ranks held N whole layers), with the single-rank layer's values of experts
// [r·E/N, (r+1)·E/N).
func TestExpertParallelShardMemory(t *testing.T) {
	const N = 8
	grp, err := ep.NewGroup(N)
	if err != nil {
		t.Fatal(err)
	}
	for _, cfg := range []Config{
		{Hidden: 64, FFN: 64, Experts: 8, TopK: 2, Dtype: tensor.Float64, Seed: 3},
		{Hidden: 64, FFN: 128, Experts: 8, TopK: 2, Dtype: tensor.Float32, Activation: GELU, SharedFFN: 2, Seed: 4},
	} {
		full, err := New(G.NewGraph(), "moe", cfg)
		if err != nil {
			t.Fatal(err)
		}
		expertBytes := float64(full.W1.Shape().TotalSize()+full.W2.Shape().TotalSize()) * float64(cfg.Dtype.Size())
		c, err := grp.Comm(N - 1)
		if err != nil {
			t.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms)
		before := ms.HeapAlloc
		l, err := NewExpertParallel(G.NewGraph(), "moe", cfg, c)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&ms)
		// The layer holds 1/8 of the expert weights, plus the router and the graph.
		if held := float64(ms.HeapAlloc) - float64(before); held > expertBytes/2 {
			t.Errorf("%v: the rank's layer keeps %.0f bytes alive, more than half of all E experts' %.0f bytes", cfg.Dtype, held, expertBytes)
		}
		for i, w := range []*G.Node{l.W1, l.W2} {
			fw := []*G.Node{full.W1, full.W2}[i]
			size := fw.Shape().TotalSize() / N
			want := epFloats(fw.Value())[(N-1)*size:]
			if got := epFloats(w.Value()); !slices.Equal(got, want) {
				t.Errorf("%v: %s is not experts [%d, %d) of the single-rank layer", cfg.Dtype, w.Name(), N-1, N)
			}
		}
		runtime.KeepAlive(l)
	}
}

// TestNewExpertParallelMemory: NewExpertParallel holds the whole layer it draws and the rank's
// copy at once; weights for which both do not fit in the memory this process may use are an
// error before anything is allocated (New's check counted the whole layer only, so a layer of
// 60% of the memory on one rank allocated 120%).
func TestNewExpertParallelMemory(t *testing.T) {
	cfg := Config{Hidden: 64, FFN: 64, Experts: 8, TopK: 2, SharedFFN: 16, Dtype: tensor.Float64}
	d := cfg.WithDefaults()
	whole := d.weightBytes()
	for _, n := range []int{1, 2, 8} {
		grp, err := ep.NewGroup(n)
		if err != nil {
			t.Fatal(err)
		}
		c, err := grp.Comm(n - 1)
		if err != nil {
			t.Fatal(err)
		}
		// The rank's copy: the router and bias (H·E + E), the shared experts and its E/N experts.
		shard := 3*(float64(cfg.Experts/n)*64*64+64*16)*8 + float64(64*cfg.Experts+cfg.Experts)*8
		func() {
			defer hostmem.SetLimit(hostmem.SetLimit(uint64(whole + shard - 1)))
			if _, err := New(G.NewGraph(), "moe", cfg); err != nil {
				t.Fatalf("N=%d: New: %v", n, err)
			}
			l, err := NewExpertParallel(G.NewGraph(), "moe", cfg, c)
			if l != nil {
				t.Errorf("N=%d: got a layer", n)
			}
			wantErrContains(t, err, "gomoe: moe.NewExpertParallel", "a rank's copy of them with", "bytes of memory this process may use")
		}()
		func() {
			defer hostmem.SetLimit(hostmem.SetLimit(uint64(whole + shard)))
			if _, err := NewExpertParallel(G.NewGraph(), "moe", cfg, c); err != nil {
				t.Errorf("N=%d, memory for both: %v", n, err)
			}
		}()
	}
}

// TestExpertParallelTraining: five Adam steps of an expert-parallel layer on N in-process
// ranks, each step with ep.SumGradients, ep.ClipGradNorm and the expert bias updated from
// ep.SumCounts, train the same model as one layer on the concatenated tokens with Adam's
// MaxGradNorm and UpdateExpertBias: the replicated weights and the bias stay the same bits on
// every rank, and every weight matches the single-rank layer's (rounding apart: the router's
// GEMM runs over T rows instead of N·T).
func TestExpertParallelTraining(t *testing.T) {
	const N, T, steps, maxNorm, lr = 2, 6, 5, 0.05, 1e-2
	cfg := Config{Hidden: 4, FFN: 3, Experts: 4, TopK: 2, Dtype: tensor.Float64, Score: Sigmoid,
		ExpertBias: true, BiasUpdateRate: 0.01, SharedFFN: 2, Seed: 3}
	H := cfg.Hidden
	data := func(step int) (x, rw []float64) {
		rng := rand.New(rand.NewSource(int64(100 + step)))
		x, rw = make([]float64, N*T*H), make([]float64, N*T*H)
		for i := range x {
			x[i], rw[i] = rng.NormFloat64(), rng.NormFloat64()
		}
		return x, rw
	}
	// build makes l's graph on rows tokens: cost = Σ Y⊙rw / (N·T) (and the layer's Loss, 0:
	// a balancing loss would see each rank's own tokens only, see NewExpertParallel).
	build := func(g *G.ExprGraph, l *Layer, rows int) (x, rw *G.Node, out *Output, err error) {
		x = G.NewMatrix(g, tensor.Float64, G.WithShape(rows, H), G.WithName("x"), G.WithInit(G.Zeroes()))
		rw = G.NewMatrix(g, tensor.Float64, G.WithShape(rows, H), G.WithName("rw"), G.WithInit(G.Zeroes()))
		if out, err = l.Forward(x); err != nil {
			return
		}
		task := G.Must(G.Div(G.Must(G.Sum(G.Must(G.HadamardProd(out.Y, rw)))), G.NewConstant(float64(N*T))))
		cost := G.Must(G.Add(task, out.Loss))
		_, err = G.Grad(cost, l.Learnables()...)
		return
	}
	set := func(n *G.Node, v []float64) error {
		return G.Let(n, tensor.New(tensor.WithShape(n.Shape()...), tensor.WithBacking(append([]float64(nil), v...))))
	}

	// One rank over all N·T tokens.
	g := G.NewGraph()
	single, err := New(g, "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	sx, srw, sout, err := build(g, single, N*T)
	if err != nil {
		t.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	opt := train.NewAdam(lr)
	opt.MaxGradNorm = maxNorm
	for s := 0; s < steps; s++ {
		x, rw := data(s)
		if err := set(sx, x); err != nil {
			t.Fatal(err)
		}
		if err := set(srw, rw); err != nil {
			t.Fatal(err)
		}
		if err := train.Step(vm, opt, single.Learnables(), func() error {
			return single.UpdateExpertBias(sout.CountsValue())
		}); err != nil {
			t.Fatal(err)
		}
	}

	// N ranks, each over its T tokens.
	states := make([]map[string][]float64, N)
	onEPRanks(t, N, cfg, func(c ep.Communicator, g *G.ExprGraph, l *Layer) error {
		r := c.Rank()
		x, rw, out, err := build(g, l, T)
		if err != nil {
			return err
		}
		vm := G.NewTapeMachine(g)
		defer vm.Close()
		opt := train.NewAdam(lr) // MaxGradNorm 0: ep.ClipGradNorm clips over the ranks
		for s := 0; s < steps; s++ {
			xs, rws := data(s)
			if err := set(x, xs[r*T*H:(r+1)*T*H]); err != nil {
				return err
			}
			if err := set(rw, rws[r*T*H:(r+1)*T*H]); err != nil {
				return err
			}
			err := train.Step(vm, opt, l.Learnables(), func() error {
				if err := ep.SumGradients(c, l.Replicated()...); err != nil {
					return err
				}
				if _, err := ep.ClipGradNorm(c, maxNorm, l.Learnables(), l.Replicated()); err != nil {
					return err
				}
				counts, err := ep.SumCounts(c, out.CountsValue().Data().([]int32))
				if err != nil {
					return err
				}
				return l.UpdateExpertBias(tensor.New(tensor.WithBacking(counts)))
			})
			if err != nil {
				return err
			}
		}
		st := map[string][]float64{}
		for _, n := range l.State() {
			st[n.Name()] = epFloats(n.Value())
		}
		states[r] = st
		return nil
	})
	for _, n := range single.State() {
		want := epFloats(n.Value())
		var got []float64
		switch n.Name() {
		case "moe.w1", "moe.w2": // sharded: the ranks' slices in order
			for r := range states {
				got = append(got, states[r][n.Name()]...)
			}
		default: // replicated: the same bits on every rank
			got = states[0][n.Name()]
			for r := 1; r < N; r++ {
				for i, v := range states[r][n.Name()] {
					if v != got[i] {
						t.Fatalf("%s[%d]: rank %d has %v, rank 0 %v", n.Name(), i, r, v, got[i])
					}
				}
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d values, want %d", n.Name(), len(got), len(want))
		}
		for i := range want {
			if !(math.Abs(got[i]-want[i]) <= 1e-10*math.Max(1, math.Abs(want[i]))) {
				t.Fatalf("%s[%d] after %d steps: %v, the single-rank layer's %v", n.Name(), i, steps, got[i], want[i])
			}
		}
	}
}

// onEPRanks builds, on every rank of a fresh group of n ranks (a 20 s exchange timeout), the
// expert-parallel layer of cfg in a graph of its own and runs fn with it; it fails t on any
// rank's error. fn may write the rank's results to its own index of a slice: Run returns
// after every rank has.
func onEPRanks(t *testing.T, n int, cfg Config, fn func(c ep.Communicator, g *G.ExprGraph, l *Layer) error) {
	t.Helper()
	grp, err := ep.NewGroupTimeout(n, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	err = grp.Run(func(c ep.Communicator) error {
		g := G.NewGraph()
		l, err := NewExpertParallel(g, "moe", cfg, c)
		if err != nil {
			return err
		}
		return fn(c, g, l)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// nilComm is a communicator type whose nil pointer NewExpertParallel must refuse before
// calling a method.
type nilComm struct{ ep.Communicator }

// TestNewExpertParallelNameCollision: NewExpertParallel checked only "name.router" in g, so a
// user's node "m.w2" of the rank's shape [E/N,F,H] was silently taken as the layer's W2.
func TestNewExpertParallelNameCollision(t *testing.T) {
	grp, err := ep.NewGroup(2)
	if err != nil {
		t.Fatal(err)
	}
	c, err := grp.Comm(0)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Hidden: 4, FFN: 4, Experts: 4, TopK: 2, PreSoftmax: true, Score: Softmax, ExpertBias: false}
	for _, n := range []struct {
		name  string
		shape []int
	}{{"m.w2", []int{2, 4, 4}}, {"m.w1", []int{2, 4, 8}}} {
		g := G.NewGraph()
		user := G.NewTensor(g, tensor.Float32, len(n.shape), G.WithShape(n.shape...), G.WithName(n.name),
			G.WithValue(tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(n.shape...))))
		l, err := NewExpertParallel(g, "m", cfg, c)
		if err == nil {
			if l.W1 == user || l.W2 == user {
				t.Errorf("%s: NewExpertParallel took the user's node as its own weight", n.name)
			} else {
				t.Errorf("%s: no error for a node of the layer's weight name", n.name)
			}
			continue
		}
		if !strings.HasPrefix(err.Error(), "gomoe: ") || !strings.Contains(err.Error(), n.name) {
			t.Errorf("%s: error %q", n.name, err)
		}
	}
}

// TestEPDroplessMemoryCheck: an expert-parallel Forward checks the routed activations of this
// rank's local plan (N·T·min(K, E/N) rows in dropless mode) against memory, not the
// single-rank T·K rows. With a limit between the two it used to accept the layer.
func TestEPDroplessMemoryCheck(t *testing.T) {
	const N, T = 4, 1024
	cfg := Config{Hidden: 64, FFN: 64, Experts: 8, TopK: 2, Dtype: tensor.Float64, Seed: 1}
	single := float64(T*cfg.TopK) * (2*64 + 3*64) * 8 // xp, yp [R,H]; SwiGLU [R,2F]; activation [R,F]
	defer hostmem.SetLimit(hostmem.SetLimit(uint64(2 * single)))
	grp, err := ep.NewGroupTimeout(N, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	comm, _ := grp.Comm(0)
	g := G.NewGraph()
	l, err := NewExpertParallel(g, "m", cfg, comm)
	if err != nil {
		t.Fatal(err)
	}
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, cfg.Hidden), G.WithName("x"))
	want := fmt.Sprintf("T=%d tokens' %d permuted rows", T, N*T*cfg.TopK)
	if _, err := l.Forward(x); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Forward: %v, want a memory error naming %q", err, want)
	}
	// The single-rank layer of the same shape fits.
	if _, err := New(G.NewGraph(), "m", cfg); err != nil {
		t.Fatal(err)
	}
	g1 := G.NewGraph()
	l1, _ := New(g1, "m", cfg)
	if _, err := l1.Forward(G.NewMatrix(g1, tensor.Float64, G.WithShape(T, cfg.Hidden), G.WithName("x"))); err != nil {
		t.Errorf("single-rank Forward: %v, want none", err)
	}
}

// TestEPConfigMismatch: ranks whose Config differs outside the plan's geometry (the seed: other
// router and shared weights; FFN; the score function) fail their first step on every rank,
// naming the configuration; they used to run, the replicas different models from the start.
func TestEPConfigMismatch(t *testing.T) {
	base := Config{Hidden: 4, FFN: 3, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 3, SharedFFN: 2}
	for _, m := range []struct {
		name string
		mod  func(*Config)
	}{
		{"Seed", func(c *Config) { c.Seed = 9 }},
		{"FFN", func(c *Config) { c.FFN = 5 }},
		{"Score", func(c *Config) { c.Score = Sigmoid }},
	} {
		t.Run(m.name, func(t *testing.T) {
			grp, err := ep.NewGroupTimeout(2, 0)
			if err != nil {
				t.Fatal(err)
			}
			const T = 5
			errs := make([]error, 2)
			done := make(chan struct{}, 2)
			for r := range 2 {
				comm, _ := grp.Comm(r)
				go func() {
					defer func() { done <- struct{}{} }()
					errs[r] = ep.RunRank(comm, func() error {
						cfg := base
						if r == 1 {
							m.mod(&cfg)
						}
						buildMu.Lock()
						g := G.NewGraph()
						l, err := NewExpertParallel(g, "m", cfg, comm)
						buildMu.Unlock()
						if err != nil {
							return err
						}
						x := make([]float64, T*cfg.Hidden)
						for i := range x {
							x[i] = math.Sin(float64(r*100 + i))
						}
						_, err = epRunLayer(g, l, x, x, T, comm, 1)
						return err
					})
				}()
			}
			deadline := time.After(20 * time.Second)
			for range 2 {
				select {
				case <-done:
				case <-deadline:
					grp.Abort(errors.New("test deadline"))
					t.Fatal("the ranks did not return within 20 s")
				}
			}
			for r, err := range errs {
				if err == nil || !strings.Contains(err.Error(), "layer configuration (moe.Config) differs") && !strings.Contains(err.Error(), "aborted") {
					t.Errorf("rank %d: %v, want the configuration error (or the abort it caused)", r, err)
				}
			}
			if errs[0] == nil || !strings.Contains(errs[0].Error()+fmt.Sprint(errs[1]), "layer configuration (moe.Config) differs") {
				t.Errorf("no rank named the configuration: %v / %v", errs[0], errs[1])
			}
		})
	}
}
