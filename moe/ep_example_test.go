package moe_test

import (
	"fmt"
	"log"
	"math/rand"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/moe"
)

// ExampleNewExpertParallel runs one layer over two in-process expert-parallel ranks: each
// rank holds half of the routed experts and its own tokens, and the router's gradient is
// summed over the ranks as a data-parallel all-reduce would.
func ExampleNewExpertParallel() {
	const N, T, H = 2, 8, 4
	cfg := moe.Config{Hidden: H, FFN: 8, Experts: 4, TopK: 2, Dtype: tensor.Float64, Seed: 1}
	grp, err := ep.NewGroup(N)
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	w1Shapes := make([]tensor.Shape, N)
	routerGrad := make([]float64, H*cfg.Experts)
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
		dr, err := layer.Router.Grad()
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		w1Shapes[c.Rank()] = layer.W1.Shape()
		for i, d := range dr.Data().([]float64) {
			routerGrad[i] += d // the data-parallel sum of the replicated router's gradient
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("W1 per rank:", w1Shapes[0], w1Shapes[1])
	fmt.Println("router gradient entries:", len(routerGrad))
	// Output:
	// W1 per rank: (2, 4, 16) (2, 4, 16)
	// router gradient entries: 16
}
