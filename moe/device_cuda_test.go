//go:build gomoecuda

package moe

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	gdev "github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/train"
)

// The layer on the GPU (device engine, tape machine, cuBLAS, gomoe's kernels) against the same
// layer on the CPU: one training step (output, every gradient, the weights after an Adam
// step) and a short training run's loss curve. The float32 tolerance covers cuBLAS's and
// gonum's different summation orders and CUDA's expf/tanhf (a few ulps each).

var testEng *gdev.Engine

func engine(t *testing.T) *gdev.Engine {
	t.Helper()
	if testEng == nil {
		e, err := gdev.New(0)
		if err != nil {
			t.Skipf("no GPU: %v", err)
		}
		testEng = e
	}
	return testEng
}

// devRig is one layer in its own graph, with the gradient of 0.5·|Y − target|² (seeded by
// G.Backpropagate with Y − target) wrt every learnable and x.
type devRig struct {
	g             *G.ExprGraph
	l             *Layer
	x, target     *G.Node
	diff          *G.Node
	params, grads G.Nodes
	y             *G.Node
	yv, dv, lv    G.Value
	cv            G.Value // expert counts
	gv            []G.Value
}

func newRig(t *testing.T, cfg Config, T int, seed int64) *devRig {
	t.Helper()
	return newRigOf(t, cfg, T, seed, func(g *G.ExprGraph) (*Layer, error) { return New(g, "moe", cfg) })
}

// newRigOf is newRig for the layer that mk makes in the rig's graph (New, NewExpertParallel).
func newRigOf(t *testing.T, cfg Config, T int, seed int64, mk func(g *G.ExprGraph) (*Layer, error)) *devRig {
	t.Helper()
	r := &devRig{g: G.NewGraph()}
	var err error
	if r.l, err = mk(r.g); err != nil {
		t.Fatal(err)
	}
	dt := r.l.Config().Dtype
	rng := rand.New(rand.NewSource(seed))
	xs := make([]float64, T*cfg.Hidden)
	ts := make([]float64, T*cfg.Hidden)
	for i := range xs {
		xs[i] = rng.NormFloat64()
		ts[i] = rng.NormFloat64() * 0.5
	}
	r.x = G.NewMatrix(r.g, dt, G.WithShape(T, cfg.Hidden), G.WithName("x"), G.WithValue(denseOf(dt, xs, T, cfg.Hidden)))
	r.target = G.NewMatrix(r.g, dt, G.WithShape(T, cfg.Hidden), G.WithName("target"), G.WithValue(denseOf(dt, ts, T, cfg.Hidden)))
	out, err := r.l.Forward(r.x)
	if err != nil {
		t.Fatal(err)
	}
	r.y = out.Y
	if r.diff, err = G.Sub(out.Y, r.target); err != nil {
		t.Fatal(err)
	}
	r.params = append(r.l.Learnables(), r.x)
	outs, seeds := G.Nodes{out.Y}, G.Nodes{r.diff}
	if out.AuxLoss != nil || out.SeqAuxLoss != nil || out.ZLoss != nil { // the routing losses join the cost with weight 1 (a host seed, as G.Grad makes); without them Loss is a constant zero
		one := G.NewConstant(float32(1))
		if out.Loss.Dtype() == tensor.Float64 {
			one = G.NewConstant(1.0)
		}
		outs, seeds = append(outs, out.Loss), append(seeds, one)
		G.Read(out.Loss, &r.lv)
	}
	if r.grads, err = G.Backpropagate(outs, seeds, r.params); err != nil {
		t.Fatal(err)
	}
	G.Read(out.Counts, &r.cv)
	G.Read(r.y, &r.yv)
	G.Read(r.diff, &r.dv)
	r.gv = make([]G.Value, len(r.grads))
	for i, n := range r.grads {
		G.Read(n, &r.gv[i])
	}
	return r
}

// clearReads drops the values read in the last step: G.Read copies into the previous value if
// there is one, and the previous step's device memory is recycled by EndStep, so each step
// must read into fresh values.
func (r *devRig) clearReads() {
	r.yv, r.dv, r.lv, r.cv = nil, nil, nil, nil
	for i := range r.gv {
		r.gv[i] = nil
	}
}

// host returns v as float64s, copying it from the GPU if it lives there.
func hostF64(t *testing.T, v G.Value) []float64 {
	t.Helper()
	if d, ok := v.(*tensor.Dense); ok && gdev.Lookup(d) != nil {
		h, err := gdev.Lookup(d).CopyOut(d)
		if err != nil {
			t.Fatal(err)
		}
		v = h
	}
	switch x := v.Data().(type) {
	case []float32:
		o := make([]float64, len(x))
		for i, f := range x {
			o[i] = float64(f)
		}
		return o
	case []float64:
		return append([]float64(nil), x...)
	case []bfloat16.BFloat16:
		o := make([]float64, len(x))
		for i, f := range x {
			o[i] = float64(f.Float32())
		}
		return o
	}
	t.Fatalf("value of %T", v.Data())
	return nil
}

// relDiff is max|a−b| / max|b|.
func relDiff(a, b []float64) float64 {
	var d, m float64
	for i := range b {
		d = math.Max(d, math.Abs(a[i]-b[i]))
		m = math.Max(m, math.Abs(b[i]))
	}
	if m == 0 {
		return d
	}
	return d / m
}

func sumSq(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return 0.5 * s
}

func deviceCases() []Config {
	return []Config{
		{Hidden: 32, FFN: 48, Experts: 8, TopK: 2, Seed: 1},
		{Hidden: 32, FFN: 40, Experts: 8, TopK: 2, PreSoftmax: true, CapacityFactor: 1.25, Seed: 2},
		{Hidden: 24, FFN: 32, Experts: 16, TopK: 4, Score: Sigmoid, Groups: 4, GroupsKept: 2, ExpertBias: true,
			SharedFFN: 16, ScalingFactor: 2.5, Activation: GELU, Seed: 3},
		{Hidden: 32, FFN: 48, Experts: 8, TopK: 2, Dtype: tensor.Float64, Seed: 4},
		{Hidden: 32, FFN: 40, Experts: 8, TopK: 2, PreSoftmax: true, ProbsOnActivation: true, JitterEps: 0.01,
			AuxLossCoeff: 0.01, SeqAuxLossCoeff: 0.01, SeqLen: 16, ZLossCoeff: 1e-3, Seed: 5},
		{Hidden: 24, FFN: 32, Experts: 16, TopK: 4, Score: Sigmoid, Groups: 4, GroupsKept: 2, ExpertBias: true,
			AuxLossCoeff: 0.01, ZLossCoeff: 1e-3, Seed: 6},
	}
}

// TestLayerStepGPUEqualsCPU: output, gradients and the Adam-updated weights of one step.
func TestLayerStepGPUEqualsCPU(t *testing.T) {
	eng := engine(t)
	const T = 64
	for i, cfg := range deviceCases() {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			tol := 2e-5
			if cfg.Dtype == tensor.Float64 {
				tol = 1e-12
			}
			cpu := newRig(t, cfg, T, 7)
			gpu := newRig(t, cfg, T, 7)
			bind := append(G.Nodes{gpu.target}, gpu.params...)
			if gpu.l.Bias != nil {
				bind = append(bind, gpu.l.Bias)
			}
			if err := eng.Bind(bind...); err != nil {
				t.Fatal(err)
			}
			mc := G.NewTapeMachine(cpu.g)
			defer mc.Close()
			mg := G.NewTapeMachine(gpu.g, G.WithEngine(eng))
			defer mg.Close()
			oc, og := train.NewAdam(1e-2), train.NewAdam(1e-2)
			defer og.Release()
			var ycpu, ygpu []float64
			gcpu := make([][]float64, len(cpu.gv))
			ggpu := make([][]float64, len(gpu.gv))
			learn := cpu.l.Learnables()
			var lossC, lossG float64
			// after: read what the step made before its device memory is recycled, and take
			// the aux-loss-free bias step from the step's counts.
			after := func(r *devRig, y *[]float64, g [][]float64, loss *float64) func() error {
				return func() error {
					*y = hostF64(t, r.yv)
					for i := range r.gv {
						g[i] = hostF64(t, r.gv[i])
					}
					if r.lv != nil {
						var err error
						if *loss, err = train.Scalar(r.lv); err != nil {
							return err
						}
					}
					if r.l.Bias != nil {
						if err := r.l.UpdateExpertBias(r.cv); err != nil {
							return err
						}
					}
					return eng.Status()
				}
			}
			if err := train.Step(mc, oc, learn, after(cpu, &ycpu, gcpu, &lossC)); err != nil {
				t.Fatal(err)
			}
			if err := train.Step(mg, og, gpu.l.Learnables(), after(gpu, &ygpu, ggpu, &lossG)); err != nil {
				t.Fatal(err)
			}
			if d := relDiff(ygpu, ycpu); d > tol {
				t.Errorf("Y: relative diff %g > %g", d, tol)
			}
			if cpu.lv != nil && math.Abs(lossG-lossC) > tol*math.Abs(lossC) {
				t.Errorf("routing losses: GPU %v, CPU %v", lossG, lossC)
			}
			if cpu.l.Bias != nil {
				if d := relDiff(hostF64(t, gpu.l.Bias.Value()), hostF64(t, cpu.l.Bias.Value())); d != 0 {
					t.Errorf("expert bias after UpdateExpertBias: relative diff %g", d)
				}
			}
			for i, p := range cpu.params {
				if d := relDiff(ggpu[i], gcpu[i]); d > 10*tol {
					t.Errorf("d/d%s: relative diff %g > %g", p.Name(), d, 10*tol)
				}
			}
			for i, p := range learn {
				w := hostF64(t, gpu.l.Learnables()[i].Value())
				if d := relDiff(w, hostF64(t, p.Value())); d > 10*tol {
					t.Errorf("%s after Adam: relative diff %g", p.Name(), d)
				}
			}
		})
	}
}

// TestLayerTrainingCurveGPUEqualsCPU: 40 Adam steps toward a fixed target; the loss curves
// agree step by step, and the loss falls.
func TestLayerTrainingCurveGPUEqualsCPU(t *testing.T) {
	eng := engine(t)
	cfg := Config{Hidden: 32, FFN: 64, Experts: 8, TopK: 2, Seed: 11}
	const T, steps = 128, 40
	cpu := newRig(t, cfg, T, 12)
	gpu := newRig(t, cfg, T, 12)
	if err := eng.Bind(append(G.Nodes{gpu.target}, gpu.params...)...); err != nil {
		t.Fatal(err)
	}
	mc := G.NewTapeMachine(cpu.g)
	defer mc.Close()
	mg := G.NewTapeMachine(gpu.g, G.WithEngine(eng))
	defer mg.Close()
	oc, og := train.NewAdam(3e-3), train.NewAdam(3e-3)
	defer og.Release()
	var lc, lg []float64
	for s := 0; s < steps; s++ {
		cpu.clearReads()
		gpu.clearReads()
		if err := train.Step(mc, oc, cpu.l.Learnables(), func() error { lc = append(lc, sumSq(hostF64(t, cpu.dv))); return nil }); err != nil {
			t.Fatal(err)
		}
		if err := train.Step(mg, og, gpu.l.Learnables(), func() error { lg = append(lg, sumSq(hostF64(t, gpu.dv))); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	for s := range lc {
		if d := math.Abs(lg[s]-lc[s]) / lc[s]; d > 1e-4 {
			t.Errorf("step %d: GPU loss %.6f, CPU %.6f (relative diff %g)", s, lg[s], lc[s], d)
		}
	}
	if !(lc[steps-1] < 0.9*lc[0]) {
		t.Errorf("loss %g → %g: no training", lc[0], lc[steps-1])
	}
	t.Logf("loss CPU %.5f → %.5f, GPU %.5f → %.5f", lc[0], lc[steps-1], lg[0], lg[steps-1])
}

// TestLayerTrainingMemoryFlat: 1000 GPU training steps allocate no new device memory after
// the first (the caching allocator serves every step) and keep the live bytes flat.
func TestLayerTrainingMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1000 steps")
	}
	eng := engine(t)
	cfg := Config{Hidden: 64, FFN: 128, Experts: 8, TopK: 2, Seed: 21}
	gpu := newRig(t, cfg, 256, 22)
	if err := eng.Bind(append(G.Nodes{gpu.target}, gpu.params...)...); err != nil {
		t.Fatal(err)
	}
	mg := G.NewTapeMachine(gpu.g, G.WithEngine(eng))
	defer mg.Close()
	opt := train.NewAdam(1e-3)
	defer opt.Release()
	var after1, after2 gdev.PoolStats
	for s := 0; s < 1000; s++ {
		if err := train.Step(mg, opt, gpu.l.Learnables(), nil); err != nil {
			t.Fatalf("step %d: %v", s, err)
		}
		switch s {
		case 1:
			after1 = eng.Pool().Stats()
		case 999:
			after2 = eng.Pool().Stats()
		}
	}
	if err := eng.Status(); err != nil {
		t.Fatal(err)
	}
	t.Logf("after step 2: %+v; after step 1000: %+v", after1, after2)
	if after2.BackendAlloc != after1.BackendAlloc || after2.LiveBytes != after1.LiveBytes || after2.CachedBytes != after1.CachedBytes {
		t.Errorf("device memory grew: %+v → %+v", after1, after2)
	}
}

// TestBFloat16LayerStepGPU: one training step of a bfloat16 layer on the GPU (fp32 router,
// fp32 accumulation in every kernel, fp32 master weights in Adam) against the float32 layer on
// the CPU with the same bfloat16-representable weights and inputs: output and gradients within
// bfloat16 rounding (3·10⁻² of the largest element), the weights after an SGD step (through
// the float32 master copy) within bfloat16 rounding of the float32 result.
func TestBFloat16LayerStepGPU(t *testing.T) {
	eng := engine(t)
	const T = 64
	for i, cfg := range []Config{
		{Hidden: 32, FFN: 48, Experts: 8, TopK: 2, Seed: 31},
		{Hidden: 32, FFN: 48, Experts: 16, TopK: 4, PreSoftmax: true, SharedFFN: 32, Activation: GELU, Seed: 32},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			cb := cfg
			cb.Dtype = bfloat16.Dtype
			gpu := newRig(t, cb, T, 9)
			cpu := newRig(t, cfg, T, 9)
			// The CPU float32 rig gets the bfloat16 rig's values, widened exactly.
			for j, n := range append(G.Nodes{gpu.target}, gpu.params...) {
				w := hostF64(t, n.Value())
				dst := append(G.Nodes{cpu.target}, cpu.params...)[j]
				if err := G.Let(dst, denseOf(tensor.Float32, w, n.Shape().Clone()...)); err != nil {
					t.Fatal(err)
				}
			}
			if err := eng.Bind(append(G.Nodes{gpu.target}, gpu.params...)...); err != nil {
				t.Fatal(err)
			}
			mc := G.NewTapeMachine(cpu.g)
			defer mc.Close()
			mg := G.NewTapeMachine(gpu.g, G.WithEngine(eng))
			defer mg.Close()
			oc, og := &train.SGD{LR: 0.1}, &train.SGD{LR: 0.1}
			defer og.Release()
			var yc, yg []float64
			gc := make([][]float64, len(cpu.gv))
			gg := make([][]float64, len(gpu.gv))
			if err := train.Step(mc, oc, cpu.l.Learnables(), func() error {
				yc = hostF64(t, cpu.yv)
				for j := range cpu.gv {
					gc[j] = hostF64(t, cpu.gv[j])
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if err := train.Step(mg, og, gpu.l.Learnables(), func() error {
				yg = hostF64(t, gpu.yv)
				for j := range gpu.gv {
					gg[j] = hostF64(t, gpu.gv[j])
				}
				return eng.Status()
			}); err != nil {
				t.Fatal(err)
			}
			if d := relDiff(yg, yc); d > 3e-2 {
				t.Errorf("Y: relative diff %g", d)
			}
			for j, p := range cpu.params {
				if d := relDiff(gg[j], gc[j]); d > 3e-2 {
					t.Errorf("d/d%s: relative diff %g", p.Name(), d)
				}
			}
			for j, p := range cpu.l.Learnables() {
				w := hostF64(t, gpu.l.Learnables()[j].Value())
				want := hostF64(t, p.Value())
				for k := range w {
					// bfloat16 keeps 8 significant bits; the step differs by lr·(gradient error).
					if d := math.Abs(w[k] - want[k]); d > math.Abs(want[k])/128+0.1*3e-2*maxAbs(gc[j]) {
						t.Fatalf("%s[%d] after SGD: GPU %v, CPU %v", p.Name(), k, w[k], want[k])
					}
				}
			}
		})
	}
}
