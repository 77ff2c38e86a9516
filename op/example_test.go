package op_test

import (
	"fmt"
	"log"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// Four tokens, two experts each (K=2) out of three; token 2 picks only one (-1). The plan puts
// each expert's rows together in token order.
func ExampleNewPlan() {
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(4, 2), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(4, 2), tensor.WithBacking([]int32{
			0, 2,
			1, 0,
			2, -1,
			0, 1,
		}))))
	plan, err := op.NewPlan(ids, nil, kernels.Geometry{E: 3, A: 1})
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	p, err := plan.Geometry.View(plan.Node.Value().Data().([]int32))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("R:      ", plan.Rows())
	fmt.Println("counts: ", p.Counts)
	fmt.Println("offsets:", p.Offsets)
	fmt.Println("rowOf:  ", p.RowOf)
	fmt.Println("tokenOf:", p.TokenOf)
	// Output:
	// R:       8
	// counts:  [3 2 2]
	// offsets: [0 3 5 7]
	// rowOf:   [0 5 3 1 6 -1 2 4]
	// tokenOf: [0 1 3 1 3 0 2 -1]
}

// Capacity mode: each expert keeps at most C=1 token, the one with the highest prob, and every
// segment is padded to C rows. Dropped slots get row -1.
func ExampleNewPlan_capacity() {
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(3, 1), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(3, 1), tensor.WithBacking([]int32{1, 1, 0}))))
	probs := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 1), G.WithName("probs"),
		G.WithValue(tensor.New(tensor.WithShape(3, 1), tensor.WithBacking([]float64{0.4, 0.9, 0.7}))))
	plan, err := op.NewPlan(ids, probs, kernels.Geometry{E: 2, A: 1,
		Mode: kernels.Capacity, C: 1, Drop: kernels.DropByProb, PadToCapacity: true})
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	p, _ := plan.Geometry.View(plan.Node.Value().Data().([]int32))
	fmt.Println("rowOf:  ", p.RowOf)
	fmt.Println("tokenOf:", p.TokenOf)
	// Output:
	// rowOf:   [-1 1 0]
	// tokenOf: [2 1]
}

// Permute copies each token's row to the rows of its experts (expert 0 gets tokens 0 and 2,
// expert 1 tokens 0, 1 and 2; the last row is unused and zero); the "experts" square their
// rows; Unpermute sums them back, weighted by the probs. G.Grad gives the gradients of x and
// of the probs; token 1's second slot names no expert (-1), so its prob gets no gradient.
func ExampleUnpermute() {
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(3, 2), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]int32{0, 1, 1, -1, 1, 0}))))
	probs := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("probs"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{0.75, 0.25, 1, 0, 0.5, 0.5}))))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, 2, 3, 4, 5, 6}))))

	plan, err := op.NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1})
	if err != nil {
		log.Fatal(err)
	}
	xp := G.Must(op.Permute(x, plan)) // [R=6, 2]
	yp := G.Must(G.Square(xp))
	y := G.Must(op.Unpermute(yp, probs, plan)) // [3, 2]
	cost := G.Must(G.Sum(y))
	grads, err := G.Grad(cost, x, probs)
	if err != nil {
		log.Fatal(err)
	}
	var xpV, yV G.Value
	G.Read(xp, &xpV)
	G.Read(y, &yV)
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("xp:    ", xpV.Data())
	fmt.Println("y:     ", yV.Data())
	fmt.Println("dx:    ", grads[0].Value().Data())
	fmt.Println("dprobs:", grads[1].Value().Data())
	// Output:
	// xp:     [1 2 5 6 1 2 3 4 5 6 0 0]
	// y:      [1 4 9 16 25 36]
	// dx:     [2 4 6 8 10 12]
	// dprobs: [5 5 25 0 61 61]
}

// Token 0 goes to experts 1 and 0, token 1 to expert 0 only. Expert 0's rows come first (in
// token order), then expert 1's; the last row holds no token and is zero.
func ExamplePermute() {
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 2), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]int32{1, 0, 0, -1}))))
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 3), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float32{1, 2, 3, 4, 5, 6}))))
	plan, err := op.NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1})
	if err != nil {
		log.Fatal(err)
	}
	xp, err := op.Permute(x, plan)
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(xp.Shape())
	fmt.Println(xp.Value().Data())
	// Output:
	// (4, 3)
	// [1 2 3 4 5 6 1 2 3 0 0 0]
}

// With the probs permuted alongside the rows, an expert can scale its own output and the
// combine runs unweighted.
func ExamplePermuteProbs() {
	g := G.NewGraph()
	ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 2), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]int32{1, 0, 0, -1}))))
	probs := G.NewMatrix(g, tensor.Float32, G.WithShape(2, 2), G.WithName("probs"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float32{0.625, 0.375, 0.75, 0.25}))))
	plan, err := op.NewPlan(ids, nil, kernels.Geometry{E: 2, A: 1})
	if err != nil {
		log.Fatal(err)
	}
	pp, err := op.PermuteProbs(probs, plan)
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println(pp.Value().Data())
	// Output:
	// [0.375 0.75 0.625 0]
}
