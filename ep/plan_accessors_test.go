package ep

import (
	"fmt"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// TestPlanRanksExperts: a plan over N in-process ranks of E experts reports N ranks, E/N local
// experts and rank·E/N as its first expert; a nil plan reports zeros.
func TestPlanRanksExperts(t *testing.T) {
	for _, c := range []struct{ N, E int }{{1, 4}, {2, 4}, {4, 8}} {
		grp, err := NewGroup(c.N)
		if err != nil {
			t.Fatal(err)
		}
		got := make([][3]int, c.N)
		err = grp.Run(func(comm Communicator) error {
			g := G.NewGraph()
			ids := G.NewMatrix(g, tensor.Int32, G.WithShape(2, 1), G.WithName("ids"),
				G.WithValue(tensor.New(tensor.WithShape(2, 1), tensor.WithBacking([]int32{0, int32(c.E - 1)}))))
			p, err := NewPlan(ids, nil, kernels.Geometry{E: c.E, A: 1}, comm)
			if err != nil {
				return err
			}
			got[comm.Rank()] = [3]int{p.Ranks(), p.LocalExperts(), p.FirstExpert()}
			return nil
		})
		if err != nil {
			t.Fatalf("N=%d E=%d: %v", c.N, c.E, err)
		}
		for r, v := range got {
			if want := [3]int{c.N, c.E / c.N, r * c.E / c.N}; v != want {
				t.Errorf("N=%d E=%d rank %d: Ranks, LocalExperts, FirstExpert = %v, want %v", c.N, c.E, r, v, want)
			}
		}
	}
	var nilPlan *Plan
	if v := fmt.Sprint(nilPlan.Ranks(), nilPlan.LocalExperts(), nilPlan.FirstExpert()); v != "0 0 0" {
		t.Errorf("nil plan: %s, want 0 0 0", v)
	}
}
