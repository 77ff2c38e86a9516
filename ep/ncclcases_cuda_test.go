//go:build gomoecuda

package ep

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	gdev "github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/ranktest"
)

// The expert-parallel ops over NCCL: the bodies of the GPU tests of ep/nccl_cuda_test.go
// (package ep_test, which makes the communicators with package ep/nccl: package ep's own
// tests cannot import it, since it imports ep). They are exported test helpers, visible to
// package ep_test only.

// commDevice is the GPU of a device communicator (nccl.Comm.Device).
func commDevice(c Communicator) int { return c.(interface{ Device() int }).Device() }

// NCCLRun calls fn once per rank, each in its own goroutine; the first failure aborts every
// rank. It fails the test after a deadline (a hang).
func NCCLRun(t *testing.T, comms []Communicator) func(fn func(Communicator) error) error {
	return func(fn func(Communicator) error) error { return ranktest.Run(t, comms, fn) }
}

// NCCLExpertParallelEqualsSingleRank runs the layer tests over NCCL (host tensors staged
// through the device), with one rank per GPU.
func NCCLExpertParallelEqualsSingleRank(t *testing.T, comms []Communicator) {
	n := len(comms)
	for _, c := range layerCases {
		if c.E%n != 0 {
			continue
		}
		c.N = n
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			t.Run(fmt.Sprintf("%s-as-N%d/%v", c.name, n, dt), func(t *testing.T) {
				in := makeInputs(c, 1)
				want, err := singleRank(c, in, dt, tape)
				if err != nil {
					t.Fatal(err)
				}
				got, err := expertParallelOn(c, in, dt, tape, NCCLRun(t, comms))
				if err != nil {
					t.Fatal(err)
				}
				for e := range want.rows {
					sameBits(t, fmt.Sprintf("rows of expert %d", e), got.rows[e], want.rows[e])
				}
				same := sameBits
				if dt == tensor.Float32 && !c.rowwise {
					same = closeTo(1e-5)
				}
				same(t, "y", got.y, want.y)
				same(t, "dx", got.dx, want.dx)
				same(t, "dprobs", got.dprobs, want.dprobs)
				same(t, "dw1", got.dw1, want.dw1)
				same(t, "dw2", got.dw2, want.dw2)
			})
		}
	}
}

// dispatchCombineY runs y = Combine(Dispatch(x)·2, probs) for rank comm's part of the case,
// with the inputs on eng's GPU if eng is not nil, and returns a host copy of y.
func dispatchCombineY(c layerCase, in layerInputs, dt tensor.Dtype, comm Communicator, eng *gdev.Engine) ([]float64, error) {
	r, T, H, K := comm.Rank(), c.T, c.H, c.K
	g := G.NewGraph()
	n := newLayerNodes(g, dt, layerCase{H: H, K: K, rowwise: true}, T, 0,
		in.x[r*T*H:(r+1)*T*H], in.probs[r*T*K:(r+1)*T*K], nil, nil, in.rw[r*T*H:(r+1)*T*H], in.ids[r*T*K:(r+1)*T*K])
	if eng != nil {
		for _, nd := range []*G.Node{n.x, n.probs, n.ids} {
			dv, err := eng.CopyIn(nd.Value().(*tensor.Dense))
			if err != nil {
				return nil, err
			}
			if err := G.Let(nd, dv); err != nil {
				return nil, err
			}
		}
	}
	plan, err := NewPlan(n.ids, nil, geometry(c), comm)
	if err != nil {
		return nil, err
	}
	xr, err := Dispatch(n.x, plan)
	if err != nil {
		return nil, err
	}
	y, err := Combine(xr, n.probs, plan)
	if err != nil {
		return nil, err
	}
	var opts []G.VMOpt
	if eng != nil {
		opts = append(opts, G.WithEngine(eng))
	}
	m := G.NewTapeMachine(g, opts...)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		return nil, err
	}
	v := y.Value().(*tensor.Dense)
	if eng != nil {
		if !eng.Owns(v) {
			return nil, fmt.Errorf("y is not on the GPU")
		}
		h, err := eng.CopyOut(v)
		if err != nil {
			return nil, err
		}
		eng.EndStep()
		v = h
	}
	return floats(v), nil
}

// NCCLDeviceDispatchCombine runs Dispatch and Combine on GPU-resident values (package
// device's engine, one per rank's GPU) over NCCL, and compares y with the in-process group on
// host values, bit for bit.
func NCCLDeviceDispatchCombine(t *testing.T, comms []Communicator) {
	n := len(comms)
	engs := make([]*gdev.Engine, n)
	for r, c := range comms {
		e, err := gdev.New(commDevice(c))
		if err != nil {
			t.Fatal(err)
		}
		engs[r] = e
		defer e.Close()
	}
	for _, c := range layerCases {
		if c.E%n != 0 {
			continue
		}
		c.N = n
		for _, dt := range []tensor.Dtype{tensor.Float32, tensor.Float64} {
			t.Run(fmt.Sprintf("%s-as-N%d/%v", c.name, n, dt), func(t *testing.T) {
				in := makeInputs(c, 4)
				want := make([][]float64, n)
				grp, _ := NewGroupTimeout(n, 20*time.Second)
				if err := grp.Run(func(comm Communicator) error {
					y, err := dispatchCombineY(c, in, dt, comm, nil)
					want[comm.Rank()] = y
					return err
				}); err != nil {
					t.Fatal(err)
				}
				got := make([][]float64, n)
				if err := NCCLRun(t, comms)(func(comm Communicator) error {
					y, err := dispatchCombineY(c, in, dt, comm, engs[comm.Rank()])
					got[comm.Rank()] = y
					return err
				}); err != nil {
					t.Fatal(err)
				}
				for r := range got {
					sameBits(t, fmt.Sprintf("rank %d y", r), got[r], want[r])
				}
			})
		}
	}
}

// NCCLAbortsOnRankError: with one NCCL rank per visible GPU, an error on one rank (rank
// 0) before or at the counts exchange, or in a collective's own arguments, aborts the NCCL
// communicators (ncclCommAbort), so that every rank returns an error promptly and later
// collectives fail with ErrAborted. On a one-GPU machine the group has one rank: the test then
// checks that the failing rank's communicator is aborted.
func NCCLAbortsOnRankError(t *testing.T, ncclComms func(*testing.T) []Communicator) {
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
				e, err := gdev.New(commDevice(c))
				if err != nil {
					t.Fatal(err)
				}
				defer e.Close()
				engs[r] = e
			}
			errs := make([]error, len(comms))
			done := make(chan struct{}, len(comms))
			for r, c := range comms {
				go func(r int, c Communicator) { // ranks alone: no helper aborts the others for them
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
