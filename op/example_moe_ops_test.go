package op_test

import (
	"fmt"
	"log"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// A router picks the top-2 of three experts per token from its scores, and GatherTopK takes
// the chosen scores as the combine weights.
func ExampleTopK() {
	g := G.NewGraph()
	scores := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("scores"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{
			0.2, 0.5, 0.3,
			0.6, 0.1, 0.3,
		}))))
	ids, err := op.TopK(scores, 2, op.TopKOpts{})
	if err != nil {
		log.Fatal(err)
	}
	probs, err := op.GatherTopK(scores, ids)
	if err != nil {
		log.Fatal(err)
	}
	var idsV, probsV G.Value
	G.Read(ids, &idsV)
	G.Read(probs, &probsV)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(idsV.Data())
	fmt.Println(probsV.Data())
	// Output:
	// [1 2 0 2]
	// [0.5 0.3 0.6 0.3]
}

// The fused router: the top-2 of three experts by logit, weighted by the softmax over the two
// chosen logits (token 0 chose logits 2 and 1: weights e/(e+1) and 1/(e+1)).
func ExampleRouterTopK() {
	g := G.NewGraph()
	logits := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 3), G.WithName("logits"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float64{
			0, 2, 1,
			3, 0, 3,
		}))))
	ro := op.RouterOpts{Score: kernels.RouterSoftmax}
	ids, err := op.RouterTopK(logits, 2, ro)
	if err != nil {
		log.Fatal(err)
	}
	probs, err := op.RouterProbs(logits, ids, ro)
	if err != nil {
		log.Fatal(err)
	}
	var idsV, probsV G.Value
	G.Read(ids, &idsV)
	G.Read(probs, &probsV)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(idsV.Data())
	fmt.Printf("%.4f\n", probsV.Data())
	// Output:
	// [1 2 0 2]
	// [0.7311 0.2689 0.5000 0.5000]
}

// Each expert multiplies its own rows of the permuted buffer by its own weight. Expert 0 scales
// by 2, expert 1 by 10; token 1 goes to expert 1, the others to expert 0.
func ExampleGroupedMatMul() {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 1), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(3, 1), tensor.WithBacking([]float64{1, 2, 3}))))
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(3, 1), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(3, 1), tensor.WithBacking([]int32{0, 1, 0}))))
	w := G.NewTensor(g, tensor.Float64, 3, G.WithShape(2, 1, 1), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(2, 1, 1), tensor.WithBacking([]float64{2, 10}))))
	plan, err := op.NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1})
	if err != nil {
		log.Fatal(err)
	}
	xp, err := op.Permute(x, plan)
	if err != nil {
		log.Fatal(err)
	}
	z, err := op.GroupedMatMul(xp, w, plan)
	if err != nil {
		log.Fatal(err)
	}
	y, err := op.Unpermute(z, nil, plan)
	if err != nil {
		log.Fatal(err)
	}
	var zV, yV G.Value
	G.Read(z, &zV)
	G.Read(y, &yV)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("expert-major rows:", zV.Data())
	fmt.Println("back in token order:", yV.Data())
	// Output:
	// expert-major rows: [2 6 20]
	// back in token order: [2 20 6]
}
