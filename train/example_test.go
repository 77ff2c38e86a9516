package train_test

import (
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/train"
)

// classify builds a forward graph: an MoE layer on x [T,H], whose output is read as logits
// over H classes, and the cross-entropy against one-hot labels plus the routing losses.
func classify(g *G.ExprGraph, cfg moe.Config, T int) (layer *moe.Layer, x, y, logits, cost *G.Node, err error) {
	if layer, err = moe.New(g, "moe", cfg); err != nil {
		return
	}
	x = G.NewMatrix(g, tensor.Float32, G.WithShape(T, cfg.Hidden), G.WithName("x"))
	y = G.NewMatrix(g, tensor.Float32, G.WithShape(T, cfg.Hidden), G.WithName("y"))
	out, err := layer.Forward(x)
	if err != nil {
		return
	}
	logits = out.Y
	ce, err := op.CrossEntropy(logits, y)
	if err != nil {
		return
	}
	cost, err = op.AddScalars(ce, out.Loss)
	return
}

// batch fills x and one-hot y for step s from a source seeded by s: the class of a token is
// the index of its largest feature, shifted by one.
func batch(s, T, H int) (x, y *tensor.Dense) {
	rng := rand.New(rand.NewPCG(uint64(s), 7))
	xs, ys := make([]float32, T*H), make([]float32, T*H)
	for t := 0; t < T; t++ {
		best := 0
		for h := 0; h < H; h++ {
			xs[t*H+h] = float32(rng.NormFloat64())
			if xs[t*H+h] > xs[t*H+best] {
				best = h
			}
		}
		ys[t*H+(best+1)%H] = 1
	}
	return tensor.New(tensor.WithShape(T, H), tensor.WithBacking(xs)), tensor.New(tensor.WithShape(T, H), tensor.WithBacking(ys))
}

// Example_trainAModel is the whole loop of a training script: moe.New, train.Adam with a
// schedule and clipping, train.Step, an evaluation on a forward-only graph that shares the
// weights, SaveCheckpoint, and LoadCheckpoint into a fresh model and optimiser to resume.
func Example_trainAModel() {
	const T, H, steps = 64, 8, 60
	cfg := moe.Config{Hidden: H, FFN: 32, Experts: 4, TopK: 2, AuxLossCoeff: 1e-2, Seed: 1}

	// Training graph: forward, gradients, tape machine, Adam.
	g := G.NewGraph()
	layer, x, y, _, cost, err := classify(g, cfg, T)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := G.Grad(cost, layer.Learnables()...); err != nil {
		log.Fatal(err)
	}
	costNode := cost // read after each run: its Value (a device value on the GPU)
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	opt := train.NewAdam(0)
	opt.MaxGradNorm = 1
	sched := train.Cosine{Peak: 0.02, Floor: 0.1, Warmup: 5, Total: steps}

	// Evaluation graph: the same layer, forward only, on the training weights.
	eg := G.NewGraph()
	elayer, ex, ey, elogits, _, err := classify(eg, cfg, T)
	if err != nil {
		log.Fatal(err)
	}
	for i, n := range elayer.State() {
		if err := G.Let(n, layer.State()[i].Value()); err != nil {
			log.Fatal(err)
		}
	}
	evm := G.NewTapeMachine(eg)
	defer evm.Close()
	accuracy := func() float64 {
		xv, yv := batch(1_000_000, T, H) // held-out tokens
		_ = G.Let(ex, xv)
		_ = G.Let(ey, yv)
		if err := evm.RunAll(); err != nil {
			log.Fatal(err)
		}
		defer evm.Reset()
		lg, lab := elogits.Value().Data().([]float32), yv.Data().([]float32)
		right := 0
		for t := 0; t < T; t++ {
			best := 0
			for h := range H {
				if lg[t*H+h] > lg[t*H+best] {
					best = h
				}
			}
			if lab[t*H+best] == 1 {
				right++
			}
		}
		return float64(right) / T
	}

	runSteps := func(vm G.VM, layer *moe.Layer, x, y *G.Node, opt *train.Adam, from, to int) (loss float64) {
		for s := from; s < to; s++ {
			xv, yv := batch(s, T, H)
			_ = G.Let(x, xv)
			_ = G.Let(y, yv)
			opt.LR = sched.LR(s)
			err := train.Step(vm, opt, layer.Learnables(), func() error {
				var err error
				loss, err = train.Scalar(costNode.Value())
				return err
			})
			if err != nil {
				log.Fatal(err)
			}
		}
		return loss
	}
	fmt.Printf("accuracy before training %.2f\n", accuracy())
	loss := runSteps(vm, layer, x, y, opt, 0, 40)
	fmt.Printf("step 40: loss %.3f, accuracy %.2f\n", loss, accuracy())

	// Save the weights, Adam's state and the step; then resume in a fresh graph and solver.
	dir, _ := os.MkdirTemp("", "gomoe-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "run.safetensors")
	err = train.SaveCheckpoint(path, train.Checkpoint{Params: layer.State(), Optimizer: opt, Meta: map[string]string{"step": "40"}})
	if err != nil {
		log.Fatal(err)
	}

	g2 := G.NewGraph()
	layer2, x2, y2, _, cost2, err := classify(g2, cfg, T)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := G.Grad(cost2, layer2.Learnables()...); err != nil {
		log.Fatal(err)
	}
	costNode = cost2
	vm2 := G.NewTapeMachine(g2)
	defer vm2.Close()
	opt2 := train.NewAdam(0)
	meta, err := train.LoadCheckpoint(path, train.Checkpoint{Params: layer2.State(), Optimizer: opt2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("resumed at step %s (Adam step %d, clipping at %g)\n", meta["step"], opt2.Steps(), opt2.MaxGradNorm)
	loss = runSteps(vm2, layer2, x2, y2, opt2, 40, steps)
	fmt.Printf("step %d: loss %.3f\n", steps, loss)
	// Output:
	// accuracy before training 0.19
	// step 40: loss 0.559, accuracy 0.84
	// resumed at step 40 (Adam step 40, clipping at 1)
	// step 60: loss 0.578
}

// ExampleStep runs Adam steps on a least-squares fit, y = x·w, reading the loss between the
// forward-backward run and the update.
func ExampleStep() {
	g := G.NewGraph()
	xs := tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]float64{1, 0, 0, 1, 1, 1, 2, -1}))
	ys := tensor.New(tensor.WithShape(4, 1), tensor.WithBacking([]float64{3, -1, 2, 7})) // w = (3, −1)
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 2), G.WithName("x"), G.WithValue(xs))
	y := G.NewMatrix(g, tensor.Float64, G.WithShape(4, 1), G.WithName("y"), G.WithValue(ys))
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 1), G.WithName("w"), G.WithInit(G.Zeroes()))
	loss := G.Must(G.Mean(G.Must(G.Square(G.Must(G.Sub(G.Must(G.Mul(x, w)), y))))))
	if _, err := G.Grad(loss, w); err != nil {
		log.Fatal(err)
	}
	vm := G.NewTapeMachine(g) // G.WithEngine(eng) on the GPU
	defer vm.Close()
	opt := train.NewAdam(0.1)
	for s := 0; s < 300; s++ {
		err := train.Step(vm, opt, G.Nodes{w}, func() error {
			l, err := train.Scalar(loss.Value())
			if s%100 == 0 {
				fmt.Printf("step %d: loss %.4f\n", s, l)
			}
			return err
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	fmt.Printf("w = %.3f\n", w.Value().Data())
	// Output:
	// step 0: loss 15.7500
	// step 100: loss 0.0004
	// step 200: loss 0.0000
	// w = [3.000 -1.000]
}

// ExampleCosine prints the learning rates of a 10-step run with 2 warmup steps.
func ExampleCosine() {
	sched := train.Cosine{Peak: 1e-3, Floor: 0.1, Warmup: 2, Total: 10}
	if err := sched.Validate(); err != nil {
		log.Fatal(err)
	}
	for s := 0; s < 10; s++ {
		fmt.Printf("%.2g ", sched.LR(s))
	}
	fmt.Println()
	// Output: 0.0005 0.001 0.001 0.00096 0.00083 0.00065 0.00045 0.00027 0.00014 0.0001
}

// ExampleClipGradNorm clips two gradients whose global norm is 13 (3-4-12) to norm 1.
func ExampleClipGradNorm() {
	g := G.NewGraph()
	vec := func(name string, v ...float64) *G.Node {
		return G.NewVector(g, tensor.Float64, G.WithShape(len(v)), G.WithName(name), G.WithValue(tensor.New(tensor.WithShape(len(v)), tensor.WithBacking(v))))
	}
	a, b := vec("a", 0, 0), vec("b", 0)
	ca, cb := vec("ca", 3, 4), vec("cb", 12)
	cost := G.Must(G.Add(G.Must(G.Sum(G.Must(G.HadamardProd(a, ca)))), G.Must(G.Sum(G.Must(G.HadamardProd(b, cb))))))
	grads, err := G.Grad(cost, a, b) // d cost/da = (3, 4), d cost/db = (12)
	if err != nil {
		log.Fatal(err)
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		log.Fatal(err)
	}
	norm, err := train.ClipGradNorm(G.NodesToValueGrads(G.Nodes{a, b}), 1)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("norm %.0f, clipped %.4f %.4f\n", norm, grads[0].Value().Data(), grads[1].Value().Data())
	// Output: norm 13, clipped [0.2308 0.3077] [0.9231]
}

// ExampleInit makes the same weights from the same seed.
func ExampleInit() {
	w1, err := train.NewInit(7).HeNormal(tensor.Float32, 1, 4, 3)
	if err != nil {
		log.Fatal(err)
	}
	w2, _ := train.NewInit(7).HeNormal(tensor.Float32, 1, 4, 3)
	fmt.Println(w1.Shape(), w1.Data().([]float32)[0] == w2.Data().([]float32)[0])
	// Output: (4, 3) true
}

// ExampleLoadTracker logs each expert's share of the routed token slots.
func ExampleLoadTracker() {
	lt, err := train.NewLoadTracker(4)
	if err != nil {
		log.Fatal(err)
	}
	_ = lt.Add([]int32{10, 20, 30, 40}, 100) // tokens per expert in one step, of T·K = 100
	fmt.Println(lt.Snapshot(1))
	fmt.Printf("max/mean over the run %.2f\n", lt.Imbalance())
	// Output:
	// expert load %: 10.0 20.0 30.0 40.0  max/mean 1.60
	// max/mean over the run 1.60
}

// ExampleSaveCheckpoint saves a weight and Adam's state after one step and loads them into a
// fresh node and optimiser.
func ExampleSaveCheckpoint() {
	w := G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2}))))
	opt := train.NewAdam(0.5)
	grad := tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, -1}))
	if err := opt.Step([]G.ValueGrad{vg{w.Value(), grad}}); err != nil {
		log.Fatal(err)
	}
	dir, _ := os.MkdirTemp("", "gomoe-example")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "w.safetensors")
	if err := train.SaveCheckpoint(path, train.Checkpoint{Params: G.Nodes{w}, Optimizer: opt, Meta: map[string]string{"epoch": "1"}}); err != nil {
		log.Fatal(err)
	}

	w2 := G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("w"), G.WithInit(G.Zeroes()))
	opt2 := train.NewAdam(0)
	meta, err := train.LoadCheckpoint(path, train.Checkpoint{Params: G.Nodes{w2}, Optimizer: opt2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w2.Value().Data(), opt2.Steps(), opt2.LR, meta)
	// Output: [0.5 2.5] 1 0.5 map[epoch:1]
}
