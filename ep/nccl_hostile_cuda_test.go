//go:build gomoecuda

package ep

import (
	"errors"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	gdev "github.com/gomoe/gomoe/device"
)

// TestNCCLAbortsOnRankError: with one NCCL rank per visible GPU, an error on one rank (rank
// 0) before or at the counts exchange, or in a collective's own arguments, aborts the NCCL
// communicators (ncclCommAbort), so that every rank returns an error promptly and later
// collectives fail with ErrAborted. On a one-GPU machine the group has one rank: the test then
// checks that the failing rank's communicator is aborted.
func TestNCCLAbortsOnRankError(t *testing.T) {
	cases := []struct {
		name string
		fn   func(c Communicator, eng *gdev.Engine) error // rank 0's step; the others run the good step
		want string
	}{
		{"bad expert id in the send plan on device values", func(c Communicator, eng *gdev.Engine) error {
			return ncclPlanStep(c, eng, true)
		}, "an expert id was outside [-1, E)"}, // the GPU plan kernel flags it; the plan's host copy reports it
		{"injected error before the step (RunRank)", func(c Communicator, eng *gdev.Engine) error {
			return RunRank(c, func() error { return errors.New("injected failure on rank 0") })
		}, "injected failure on rank 0"},
		{"ExchangeCounts with a count length that is no multiple of the ranks", func(c Communicator, eng *gdev.Engine) error {
			_, err := c.ExchangeCounts(nil)
			return err
		}, "want a positive multiple"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			comms := ncclComms(t) // fresh communicators: each case aborts its own
			engs := make([]*gdev.Engine, len(comms))
			for r, c := range comms {
				e, err := gdev.New(c.Device())
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				engs[r] = e
			}
			errs := make([]error, len(comms))
			done := make(chan struct{}, len(comms))
			for r, c := range comms {
				go func(r int, c *NCCL) { // ranks alone: no helper aborts the others for them
					defer func() { done <- struct{}{} }()
					if r == 0 {
						errs[r] = tc.fn(c, engs[r])
					} else {
						errs[r] = ncclPlanStep(c, engs[r], false)
					}
				}(r, c)
			}
			deadline := time.After(2 * time.Minute)
			for range comms {
				select {
				case <-done:
				case <-deadline:
					for _, c := range comms {
						c.Abort(errors.New("test deadline"))
					}
					t.Fatal("the ranks did not return within 2 minutes: rank 0's error did not abort the communicator")
				}
			}
			if errs[0] == nil || !strings.Contains(errs[0].Error(), tc.want) {
				t.Errorf("rank 0: %v, want %q", errs[0], tc.want)
			}
			for r := 1; r < len(comms); r++ {
				if errs[r] == nil {
					t.Errorf("rank %d returned no error", r)
				}
			}
			if _, err := comms[0].ExchangeCounts(make([]int32, len(comms))); !errors.Is(err, ErrAborted) {
				t.Errorf("rank 0's next collective: %v, want ErrAborted", err)
			}
		})
	}
}

// ncclPlanStep runs plan, dispatch and combine of a small layer for comm's rank on device
// values (eng's GPU); bad puts an expert id past E into the rank's ids.
func ncclPlanStep(comm Communicator, eng *gdev.Engine, bad bool) error {
	c := layerCase{N: comm.Size(), T: 8, K: 2, E: 4 * comm.Size(), H: 8, F: 4, A: 1}
	in := makeInputs(c, 11)
	if bad {
		in.ids[comm.Rank()*c.T*c.K+1] = int32(c.E + 5)
	}
	r, T, H, K := comm.Rank(), c.T, c.H, c.K
	g := G.NewGraph()
	n := newLayerNodes(g, tensor.Float32, layerCase{H: H, K: K, rowwise: true}, T, 0,
		in.x[r*T*H:(r+1)*T*H], in.probs[r*T*K:(r+1)*T*K], nil, nil, in.rw[r*T*H:(r+1)*T*H], in.ids[r*T*K:(r+1)*T*K])
	for _, nd := range []*G.Node{n.x, n.probs, n.ids} {
		dv, err := eng.CopyIn(nd.Value().(*tensor.Dense))
		if err != nil {
			return err
		}
		if err := G.Let(nd, dv); err != nil {
			return err
		}
	}
	plan, err := NewPlan(n.ids, nil, geometry(c), comm)
	if err != nil {
		return err
	}
	xr, err := Dispatch(n.x, plan)
	if err != nil {
		return err
	}
	if _, err := Combine(xr, n.probs, plan); err != nil {
		return err
	}
	m := G.NewTapeMachine(g, G.WithEngine(eng))
	defer m.Close()
	defer eng.EndStep()
	return m.RunAll()
}
