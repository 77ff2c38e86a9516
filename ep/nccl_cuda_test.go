//go:build gomoecuda

package ep

import (
	"errors"
	"fmt"
	"math/rand"
	"sync"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	gdev "github.com/gomoe/gomoe/device"
)

// The NCCL communicator runs the same tests as the in-process group, with one rank per visible
// GPU (a communicator of size 1 on a one-GPU machine).

func ncclComms(t *testing.T) []*NCCL {
	t.Helper()
	n, err := DeviceCount()
	if err != nil || n == 0 {
		t.Skipf("no CUDA device: %v", err)
	}
	devs := make([]int, n)
	for i := range devs {
		devs[i] = i
	}
	comms, err := NewNCCLGroup(devs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range comms {
			c.Close()
		}
	})
	return comms
}

// ncclRun calls fn once per rank, each in its own goroutine; the first failure aborts every
// rank. It fails the test after a deadline (a hang).
func ncclRun(t *testing.T, comms []*NCCL) func(fn func(Communicator) error) error {
	return func(fn func(Communicator) error) error {
		errs := make([]error, len(comms))
		var wg sync.WaitGroup
		for r, c := range comms {
			wg.Add(1)
			go func(r int, c *NCCL) {
				defer wg.Done()
				if errs[r] = fn(c); errs[r] != nil {
					for _, o := range comms {
						o.Abort(errs[r])
					}
				}
			}(r, c)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			t.Fatal("NCCL ranks did not finish within 2 minutes")
		}
		return errors.Join(errs...)
	}
}

func TestNCCLExchangeCounts(t *testing.T) {
	comms := ncclComms(t)
	n, m := len(comms), 3
	got := make([][]int32, n)
	err := ncclRun(t, comms)(func(c Communicator) error {
		send := make([]int32, n*m)
		for j := 0; j < n; j++ {
			for k := 0; k < m; k++ {
				send[j*m+k] = int32(100*c.Rank() + 10*j + k)
			}
		}
		var err error
		got[c.Rank()], err = c.ExchangeCounts(send)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < n; j++ {
		for i := 0; i < n; i++ {
			for k := 0; k < m; k++ {
				if want := int32(100*i + 10*j + k); got[j][i*m+k] != want {
					t.Fatalf("rank %d got %d from rank %d entry %d, want %d", j, got[j][i*m+k], i, k, want)
				}
			}
		}
	}
}

// TestNCCLAllToAllDevice exchanges device buffers with random blocks and compares with the
// in-process group on the same host data.
func TestNCCLAllToAllDevice(t *testing.T) {
	comms := ncclComms(t)
	n := len(comms)
	rng := rand.New(rand.NewSource(7))
	const w, nb = 5, 3
	lens := make([][][]int, n)
	for i := range lens {
		lens[i] = make([][]int, n)
		for j := range lens[i] {
			for k := 0; k < nb; k++ {
				lens[i][j] = append(lens[i][j], rng.Intn(50))
			}
		}
	}
	layout := func(me int) (sends, recvs [][]Block, sr, rr int) {
		sends, recvs = make([][]Block, n), make([][]Block, n)
		for j := 0; j < n; j++ {
			for k := 0; k < nb; k++ {
				sends[j] = append(sends[j], Block{sr, lens[me][j][k]})
				sr += lens[me][j][k]
			}
		}
		for i := n - 1; i >= 0; i-- {
			for k := 0; k < nb; k++ {
				recvs[i] = append(recvs[i], Block{rr, lens[i][me][k]})
				rr += lens[i][me][k] + 1
			}
		}
		return
	}
	sendData := func(me, rows int) []float32 {
		s := make([]float32, rows*w)
		for i := range s {
			s[i] = float32(me*100000 + i)
		}
		return s
	}
	want := make([][]float32, n)
	grp, _ := NewGroupTimeout(n, 20*time.Second)
	if err := grp.Run(func(c Communicator) error {
		sends, recvs, sr, rr := layout(c.Rank())
		sb, _ := HostBuffer(sendData(c.Rank(), sr), w)
		want[c.Rank()] = make([]float32, rr*w)
		rb, _ := HostBuffer(want[c.Rank()], w)
		return c.AllToAll(sb, rb, sends, recvs)
	}); err != nil {
		t.Fatal(err)
	}
	got := make([][]float32, n)
	err := ncclRun(t, comms)(func(c Communicator) error {
		nc := c.(*NCCL)
		sends, recvs, sr, rr := layout(c.Rank())
		sd, err := nc.NewDeviceBuffer(Buffer{Dtype: tensor.Float32, Rows: sr, Width: w})
		if err != nil {
			return err
		}
		defer sd.Free()
		rd, err := nc.NewDeviceBuffer(Buffer{Dtype: tensor.Float32, Rows: rr, Width: w})
		if err != nil {
			return err
		}
		defer rd.Free()
		if err := sd.Upload(sendData(c.Rank(), sr)); err != nil {
			return err
		}
		if err := c.AllToAll(sd.Buffer, rd.Buffer, sends, recvs); err != nil {
			return err
		}
		if err := nc.Sync(); err != nil {
			return err
		}
		got[c.Rank()] = make([]float32, rr*w)
		return rd.Download(got[c.Rank()])
	})
	if err != nil {
		t.Fatal(err)
	}
	for r := range got {
		for i := range got[r] {
			if got[r][i] != want[r][i] {
				t.Fatalf("rank %d element %d = %v, want %v", r, i, got[r][i], want[r][i])
			}
		}
	}
}

// TestNCCLExpertParallelEqualsSingleRank runs the layer tests over NCCL (host tensors staged
// through the device), with one rank per GPU.
func TestNCCLExpertParallelEqualsSingleRank(t *testing.T) {
	comms := ncclComms(t)
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
				got, err := expertParallelOn(c, in, dt, tape, ncclRun(t, comms))
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

// TestNCCLDeviceDispatchCombine runs Dispatch and Combine on GPU-resident values (package
// device's engine, one per rank's GPU) over NCCL, and compares y with the in-process group on
// host values, bit for bit.
func TestNCCLDeviceDispatchCombine(t *testing.T) {
	comms := ncclComms(t)
	n := len(comms)
	engs := make([]*gdev.Engine, n)
	for r, c := range comms {
		e, err := gdev.New(c.Device())
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
				if err := ncclRun(t, comms)(func(comm Communicator) error {
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

// TestNCCLBlockCopyKernel reruns the device exchange tests with every list of copy runs moved
// by the block-copy kernel (the path of the large expert-parallel shapes, whose lists have
// one run per expert) and with the exchange cut into 3 chunks.
func TestNCCLBlockCopyKernel(t *testing.T) {
	defer func(k, c int) { kernelRuns, exchangeChunks = k, c }(kernelRuns, exchangeChunks)
	kernelRuns, exchangeChunks = 0, 3
	before := copyLaunches.Load()
	t.Run("AllToAllDevice", TestNCCLAllToAllDevice)
	t.Run("DeviceDispatchCombine", TestNCCLDeviceDispatchCombine)
	t.Run("ExpertParallelEqualsSingleRank", TestNCCLExpertParallelEqualsSingleRank)
	if copyLaunches.Load() == before {
		t.Error("the block-copy kernel was never launched")
	}
}
