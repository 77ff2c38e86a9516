package op_test

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/op"
)

// A classifier head from gomoe's device-capable building blocks: embedding, bias, ReLU,
// RMSNorm and the mean cross-entropy, with the gradient of the table.
func ExampleCrossEntropy() {
	g := G.NewGraph()
	table := G.NewMatrix(g, tensor.Float64, G.WithShape(3, 2), G.WithName("table"),
		G.WithValue(tensor.New(tensor.WithShape(3, 2), tensor.WithBacking([]float64{1, -1, 0, 2, -3, 1}))))
	ids := G.NewVector(g, tensor.Int32, G.WithShape(2), G.WithName("ids"),
		G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]int32{2, 0}))))
	b := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("b"),
		G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{0.5, 0}))))
	gain := G.NewVector(g, tensor.Float64, G.WithShape(2), G.WithName("gain"),
		G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float64{1, 1}))))
	target := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("target"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{0, 1, 1, 0}))))

	x := G.Must(op.Embedding(table, ids))           // rows 2 and 0: (−3, 1), (1, −1)
	h := G.Must(op.ReLU(G.Must(op.BiasAdd(x, b))))  // (0, 1), (1.5, 0)
	logits := G.Must(op.RMSNorm(h, gain, 0))        // (0, √2), (√2, 0)
	loss := G.Must(op.CrossEntropy(logits, target)) // both rows pick the larger logit
	grads, err := G.Grad(loss, table)
	if err != nil {
		fmt.Println(err)
		return
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("loss %.4f\n", loss.Value().Data())
	fmt.Printf("gradient of the table: %v\n", grads[0].Shape())
	// Output:
	// loss 0.2176
	// gradient of the table: (3, 2)
}

// A SwiGLU FFN's hidden activation from one matmul: the gate and up projections are the two
// halves of one weight [H,2F], and SwiGLUPacked applies silu(gate)·up to the halves of x·W.
func ExampleSwiGLUPacked() {
	g := G.NewGraph()
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 2), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1, 0, 0, 2}))))
	// columns 0..1: gate projection, 2..3: up projection
	w := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 4), G.WithName("w"),
		G.WithValue(tensor.New(tensor.WithShape(2, 4), tensor.WithBacking([]float64{1, 0, 2, 1, 0, -1, 1, 0.5}))))
	z := G.Must(op.MatMul(x, w))    // (1, 0 | 2, 1), (0, −2 | 2, 1)
	h := G.Must(op.SwiGLUPacked(z)) // silu(gate)·up
	grads, err := G.Grad(G.Must(G.Sum(h)), w)
	if err != nil {
		fmt.Println(err)
		return
	}
	vm := G.NewTapeMachine(g)
	defer vm.Close()
	if err := vm.RunAll(); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("h %.4f\n", h.Value().Data())
	fmt.Printf("gradient of w: %v\n", grads[0].Shape())
	// Output:
	// h [1.4621 0.0000 0.0000 -0.2384]
	// gradient of w: (2, 4)
}
