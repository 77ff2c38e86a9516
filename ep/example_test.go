package ep_test

import (
	"fmt"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/kernels"
)

// Two in-process ranks, two tokens each, four experts (two per rank), top-1 routing. Each
// rank doubles the rows it receives and sends them back; Combine weights them by the probs.
func Example() {
	grp, err := ep.NewGroup(2)
	if err != nil {
		fmt.Println(err)
		return
	}
	ids := [][]int32{{3, 0}, {1, 2}}          // rank r's tokens' experts
	xs := [][]float64{{1, 10}, {100, 1000}}   // rank r's tokens [T=2, H=1]
	probs := [][]float64{{0.5, 1}, {1, 0.25}} // router weights [T=2, K=1]
	out := make([][]float64, 2)
	var mu sync.Mutex
	err = grp.Run(func(c ep.Communicator) error {
		r := c.Rank()
		g := G.NewGraph()
		idn := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(ids[r]))))
		x := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 1), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(xs[r]))))
		p := G.NewMatrix(g, tensor.Float64, G.WithShape(2, 1), G.WithName("probs"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(probs[r]))))
		plan, err := ep.NewPlan(idn, nil, kernels.Geometry{E: 4, A: 1}, c)
		if err != nil {
			return err
		}
		xr, err := ep.Dispatch(x, plan) // the rows of this rank's two experts
		if err != nil {
			return err
		}
		yr, err := G.Mul(xr, G.NewConstant(2.0))
		if err != nil {
			return err
		}
		y, err := ep.Combine(yr, p, plan)
		if err != nil {
			return err
		}
		m := G.NewTapeMachine(g)
		defer m.Close()
		if err := m.RunAll(); err != nil {
			return err
		}
		mu.Lock()
		out[r] = y.Value().Data().([]float64)
		mu.Unlock()
		return nil
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(out[0], out[1])
	// Output: [1 20] [200 500]
}
