package moe_test

import (
	"fmt"
	"log"
	"math/rand"
	"slices"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/moe"
)

// ExampleNewExpertParallel runs one layer over two in-process expert-parallel ranks: each
// rank holds half of the routed experts and its own tokens, and ep.SumGradients adds the
// replicated weights' gradients (the router's here) over the ranks, so that every rank's
// optimiser would take the same step.
func ExampleNewExpertParallel() {
	const N, T, H = 2, 8, 4
	cfg := moe.Config{Hidden: H, FFN: 8, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 1}
	grp, err := ep.NewGroup(N)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	w1Shapes := make([]tensor.Shape, N)
	routerGrads := make([][]float64, N)
	err = grp.Run(func(c ep.Communicator) error {
		g := G.NewGraph()
		layer, err := moe.NewExpertParallel(g, "moe", cfg, c)
		if err != nil {
			return err
		}
		rng := rand.New(rand.NewSource(int64(c.Rank())))
		v := make([]float64, T*H)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(T, H), G.WithName("x"),
			G.WithValue(tensor.New(tensor.WithShape(T, H), tensor.WithBacking(v))))
		out, err := layer.Forward(x)
		if err != nil {
			return err
		}
		cost, err := G.Sum(G.Must(G.Square(out.Y)))
		if err != nil {
			return err
		}
		if _, err := G.Grad(cost, layer.Learnables()...); err != nil {
			return err
		}
		m := G.NewTapeMachine(g)
		defer m.Close()
		if err := m.RunAll(); err != nil { // every rank runs together: Forward exchanges tokens
			return err
		}
		if err := ep.SumGradients(c, layer.Replicated()...); err != nil {
			return err
		}
		dr, err := layer.Router.Grad()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		w1Shapes[c.Rank()] = layer.W1.Shape()
		routerGrads[c.Rank()] = dr.Data().([]float64)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("W1 per rank:", w1Shapes[0], w1Shapes[1])
	fmt.Println("router gradient entries:", len(routerGrads[0]))
	fmt.Println("the ranks' router gradients are equal:", slices.Equal(routerGrads[0], routerGrads[1]))
	// Output:
	// W1 per rank: (2, 4, 16) (2, 4, 16)
	// router gradient entries: 16
	// the ranks' router gradients are equal: true
}
