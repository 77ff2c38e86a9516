package ep

import (
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// TestLispAccumulates: on the lisp machine the exchanges' DoDiff add into the input's gradient
// (DoDiff's contract), so an input feeding two dispatches, or two combines, gets the sum of
// both. Two ranks, two tokens each, top-1 over four experts, no drops, H = 1, two plans p, p2:
//
//	cost = Σ_ranks Σ DispatchRows(x, p) + Σ DispatchRows(x, p2)          → dx = 2 for every token
//	cost = Σ_ranks Σ CombineRows(r, p) + Σ CombineRows(r, p2), r = DispatchRows(x, p)·c → dx = 2·c
//
// where c = 3 is a constant; overwriting the gradient in place of adding gives half.
func TestLispAccumulates(t *testing.T) {
	ids := [][]int32{{3, 0}, {1, 2}}
	// ids2 routes other tokens to each rank but as many (two) to each: a second plan of the
	// same row counts. Two uses of one plan would be one node (Gorgonia shares equal nodes).
	ids2 := [][]int32{{0, 3}, {2, 1}}
	xs := [][]float64{{1, 10}, {100, 1000}}
	for _, dt := range []tensor.Dtype{tensor.Float64, tensor.Float32} {
		for _, combine := range []bool{false, true} {
			name := fmt.Sprintf("%v/combine=%v", dt, combine)
			grp, err := NewGroup(2)
			if err != nil {
				t.Fatal(err)
			}
			dx := make([][]float64, 2)
			err = grp.Run(func(c Communicator) error {
				r := c.Rank()
				g := G.NewGraph()
				idn := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(append([]int32(nil), ids[r]...)))))
				var xv *tensor.Dense
				if dt == tensor.Float64 {
					xv = tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(append([]float64(nil), xs[r]...)))
				} else {
					xv = tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]float32{float32(xs[r][0]), float32(xs[r][1])}))
				}
				x := G.NewMatrix(g, dt, G.WithShape(2, 1), G.WithName("x"), G.WithValue(xv))
				plan, err := NewPlan(idn, nil, kernels.Geometry{E: 4, A: 1}, c)
				if err != nil {
					return err
				}
				idn2 := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids2"), G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking(append([]int32(nil), ids2[r]...)))))
				plan2, err := NewPlan(idn2, nil, kernels.Geometry{E: 4, A: 1}, c)
				if err != nil {
					return err
				}
				var a, b *G.Node
				if !combine {
					if a, err = DispatchRows(x, plan); err != nil {
						return err
					}
					if b, err = DispatchRows(x, plan2); err != nil {
						return err
					}
				} else {
					xr, err := DispatchRows(x, plan)
					if err != nil {
						return err
					}
					three := G.NewConstant(3.0)
					if dt == tensor.Float32 {
						three = G.NewConstant(float32(3))
					}
					rr, err := G.Mul(xr, three)
					if err != nil {
						return err
					}
					if a, err = CombineRows(rr, plan); err != nil {
						return err
					}
					if b, err = CombineRows(rr, plan2); err != nil {
						return err
					}
				}
				sa, err := G.Sum(a)
				if err != nil {
					return err
				}
				sb, err := G.Sum(b)
				if err != nil {
					return err
				}
				if _, err := G.Add(sa, sb); err != nil {
					return err
				}
				m := G.NewLispMachine(g)
				defer m.Close()
				if err := m.RunAll(); err != nil {
					return err
				}
				gv, err := x.Grad()
				if err != nil {
					return err
				}
				switch d := gv.Data().(type) {
				case []float64:
					dx[r] = append([]float64(nil), d...)
				case []float32:
					dx[r] = []float64{float64(d[0]), float64(d[1])}
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := 2.0
			if combine {
				want = 6
			}
			for r := range dx {
				if len(dx[r]) != 2 || dx[r][0] != want || dx[r][1] != want {
					t.Errorf("%s: rank %d dx = %v, want [%v %v]", name, r, dx[r], want, want)
				}
			}
		}
	}
}
