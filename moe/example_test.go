package moe_test

import (
	"fmt"
	"log"
	"math/rand"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/moe"
	"github.com/gomoe/gomoe/train"
)

// Example trains a small MoE layer to map random inputs to random targets, reading the loss
// and the tokens per expert along the way.
func Example() {
	const T, H = 32, 8
	g := G.NewGraph()
	layer, err := moe.New(g, "moe", moe.Config{
		Hidden: H, FFN: 16, Experts: 4, TopK: 2,
		AuxLossCoeff: 1e-2, ZLossCoeff: 1e-3,
		SharedFFN: 8, Seed: 1,
	})
	if err != nil {
		log.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	data := func() *tensor.Dense {
		v := make([]float32, T*H)
		for i := range v {
			v[i] = float32(rng.NormFloat64())
		}
		return tensor.New(tensor.WithShape(T, H), tensor.WithBacking(v))
	}
	x := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("x"), G.WithValue(data()))
	target := G.NewMatrix(g, tensor.Float32, G.WithShape(T, H), G.WithName("target"), G.WithValue(data()))

	out, err := layer.Forward(x)
	if err != nil {
		log.Fatal(err)
	}
	mse := G.Must(G.Mean(G.Must(G.Square(G.Must(G.Sub(out.Y, target))))))
	cost := G.Must(G.Add(mse, out.Loss))
	if _, err := G.Grad(cost, layer.Learnables()...); err != nil {
		log.Fatal(err)
	}
	var mseV, counts G.Value
	G.Read(mse, &mseV)
	G.Read(out.Counts, &counts)

	m := G.NewTapeMachine(g)
	defer m.Close()
	opt := train.NewAdam(0.01)
	var first, last float32
	for step := 0; step < 200; step++ {
		// train.Step runs the forward and backward pass, calls the function (outputs are read
		// there, before the update) and updates the weights with the optimiser.
		err := train.Step(m, opt, layer.Learnables(), func() error {
			last = mseV.Data().(float32)
			if step > 0 {
				return nil
			}
			first = last
			st, err := out.Stats(counts)
			if err != nil {
				return err
			}
			fmt.Println("routed pairs:", sum(st.TokensPerExpert), "dropped:", st.Dropped)
			return nil
		})
		if err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("loss went down:", last < first/2)
	// Output:
	// routed pairs: 64 dropped: 0
	// loss went down: true
}

func sum(v []int) int {
	s := 0
	for _, x := range v {
		s += x
	}
	return s
}
