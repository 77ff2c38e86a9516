package moe_test

import (
	"fmt"
	"log"
	"math/rand"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/moe"
)

// ExampleLayer_Infer evaluates a layer on a batch of sequences [B,S,H] beside its training
// forward in the same graph: Infer adds no jitter and no losses (Loss is a zero scalar) and
// routes with the evaluation capacity; a machine on the subgraph of its output runs the
// evaluation alone, without gradients.
func ExampleLayer_Infer() {
	const B, S, H = 4, 8, 16
	g := G.NewGraph()
	layer, err := moe.New(g, "moe", moe.Config{
		Hidden: H, FFN: 32, Experts: 8, TopK: 2,
		AuxLossCoeff: 1e-2, JitterEps: 1e-2, // training only
		CapacityFactor: 1.25, EvalCapacityFactor: 2, MinCapacity: 4,
		Seed: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	batch := func(shape ...int) *tensor.Dense {
		v := make([]float32, tensor.Shape(shape).TotalSize())
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(v))
	}
	// The training forward (its loss and G.Grad would go here).
	xTrain := G.NewMatrix(g, tensor.Float32, G.WithShape(B*S, H), G.WithName("xtrain"), G.WithValue(batch(B*S, H)))
	if _, err := layer.Forward(xTrain); err != nil {
		log.Fatal(err)
	}

	// The evaluation forward, on [B,S,H].
	xEval := G.NewTensor(g, tensor.Float32, 3, G.WithShape(B, S, H), G.WithName("xeval"), G.WithValue(batch(B, S, H)))
	ev, err := layer.Infer(xEval)
	if err != nil {
		log.Fatal(err)
	}
	var y G.Value
	G.Read(ev.Y, &y)
	m := G.NewTapeMachine(g.SubgraphRoots(ev.Y, ev.Counts))
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	st, err := ev.Stats(ev.CountsValue())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("Y:", y.Shape(), "loss:", ev.Loss.Value()) // a constant: its value is there before any run
	fmt.Println("capacity:", layer.Config().EvalCapacity(B*S), "dropped:", st.Dropped)
	// Output:
	// Y: (4, 8, 16) loss: 0
	// capacity: 16 dropped: 0
}
