// Command quickstart trains a tiny Mixture-of-Experts layer with gomoe's ops in a Gorgonia
// graph: a router picks K of E experts per token, op.Permute groups the tokens by expert, each
// expert applies its own weight matrix (op.GroupedMatMul), and op.Unpermute combines the
// results weighted by the router's probs. G.Grad differentiates the whole thing, router
// included, and Adam (train.Adam, one train.Step per step) fits a target that no single linear map can: every token's target is
// made by one of E hidden linear maps, chosen by the token's direction.
//
//	go run ./examples/quickstart
package main

import (
	"fmt"
	"log"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/train"
)

const (
	T     = 256 // tokens
	H     = 8   // hidden size
	E     = 4   // experts
	K     = 2   // experts per token
	steps = 400
)

func main() {
	rng := rand.New(rand.NewPCG(1, 2))
	xs, target := data(rng)

	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"), G.WithValue(xs))
	y0 := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("target"), G.WithValue(target))
	wr := G.NewMatrix(g, tensor.Float64, G.WithShape(H, E), G.WithName("router"), G.WithValue(randn(rng, 0.3, H, E)))
	w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(E, H, H), G.WithName("experts"), G.WithValue(randn(rng, 0.3, E, H, H)))

	// Route: softmax scores, top-K ids, and the chosen experts' probs. op.Softmax subtracts
	// each row's own maximum (Gorgonia's SoftMax in tensor v0.9.24 can overflow to NaN) and
	// has CPU and GPU kernels.
	logits := G.Must(G.Mul(x, wr))
	scores := G.Must(op.Softmax(logits))
	ids := G.Must(op.TopK(scores, K, op.TopKOpts{}))
	probs := G.Must(op.GatherTopK(scores, ids))
	// Dispatch, per-expert transform, combine.
	plan, err := op.NewPlan(ids, nil, kernels.Geometry{E: E, A: 1})
	if err != nil {
		log.Fatal(err)
	}
	xp := G.Must(op.Permute(x, plan))           // [R,H], expert-major
	hp := G.Must(op.GroupedMatMul(xp, w, plan)) // [R,H], expert e's rows times w[e]
	y := G.Must(op.Unpermute(hp, probs, plan))  // [T,H]
	loss := G.Must(G.Mean(G.Must(G.Square(G.Must(G.Sub(y, y0))))))
	if _, err := G.Grad(loss, wr, w); err != nil {
		log.Fatal(err)
	}

	var lossV, planV G.Value
	G.Read(loss, &lossV)
	G.Read(plan.Node, &planV)
	m := G.NewTapeMachine(g) // G.WithEngine(eng) runs it on the GPU (package device)
	defer m.Close()
	opt := train.NewAdam(0.02)
	fmt.Printf("MoE layer: T=%d tokens, H=%d, E=%d experts, top-%d, R=%d permuted rows\n", T, H, E, K, plan.Rows())
	fmt.Printf("best single linear map (least squares): loss %.5f\n", linearBaseline(xs, target))
	for i := 0; i <= steps; i++ {
		// train.Step runs forward and backward, calls the function (read the step's outputs
		// there), then lets Adam update the weights from their gradients.
		err := train.Step(m, opt, G.Nodes{wr, w}, func() error {
			if i%100 != 0 {
				return nil
			}
			p, err := plan.Geometry.View(planV.Data().([]int32))
			if err != nil {
				return err
			}
			dwr, err := wr.Grad()
			if err != nil {
				return err
			}
			l, err := train.Scalar(lossV)
			fmt.Printf("step %3d  loss %.5f  |dL/d router| %.4f  tokens per expert %v\n",
				i, l, norm(dwr.Data().([]float64)), p.Counts)
			return err
		})
		if err != nil {
			log.Fatal(err)
		}
	}
}

// data makes inputs x [T,H] and targets: token t's target is A[c]·x[t], where c is the
// hidden map of x[t]'s largest coordinate among the first E.
func data(rng *rand.Rand) (x, target *tensor.Dense) {
	a := make([][]float64, E)
	for e := range a {
		a[e] = make([]float64, H*H)
		for i := range a[e] {
			a[e][i] = rng.NormFloat64() / math.Sqrt(H)
		}
	}
	xs := make([]float64, T*H)
	ts := make([]float64, T*H)
	for t := 0; t < T; t++ {
		row := xs[t*H : (t+1)*H]
		c := 0
		for h := range row {
			row[h] = rng.NormFloat64()
			if h < E && row[h] > row[c] {
				c = h
			}
		}
		for i := 0; i < H; i++ {
			for j := 0; j < H; j++ {
				ts[t*H+i] += a[c][i*H+j] * row[j]
			}
		}
	}
	return tensor.New(tensor.WithShape(T, H), tensor.WithBacking(xs)), tensor.New(tensor.WithShape(T, H), tensor.WithBacking(ts))
}

// linearBaseline is the mean squared error of the best single linear map x -> target.
func linearBaseline(x, target *tensor.Dense) float64 {
	X := mat.NewDense(T, H, x.Data().([]float64))
	Y := mat.NewDense(T, H, target.Data().([]float64))
	var B, P mat.Dense
	if err := B.Solve(X, Y); err != nil {
		log.Fatal(err)
	}
	P.Mul(X, &B)
	P.Sub(&P, Y)
	return mat.Norm(&P, 2) * mat.Norm(&P, 2) / (T * H)
}

// randn is a tensor of normal values with standard deviation sd.
func randn(rng *rand.Rand, sd float64, shape ...int) *tensor.Dense {
	n := 1
	for _, s := range shape {
		n *= s
	}
	v := make([]float64, n)
	for i := range v {
		v[i] = sd * rng.NormFloat64()
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
}

func norm(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}
