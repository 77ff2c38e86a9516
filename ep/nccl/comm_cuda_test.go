//go:build gomoecuda

package nccl

import (
	"math/rand"
	"testing"
	"time"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/ep/internal/ncclknob"
	"github.com/gomoe/gomoe/internal/ranktest"
)

// The communicator's own tests, with one rank per visible GPU (a communicator of size 1 on a
// one-GPU machine). The expert-parallel ops over NCCL are tested in package ep
// (ep/nccl_cuda_test.go).

func ncclComms(t *testing.T) []*Comm {
	t.Helper()
	n, err := DeviceCount()
	if err != nil || n == 0 {
		t.Skipf("no CUDA device: %v", err)
	}
	devs := make([]int, n)
	for i := range devs {
		devs[i] = i
	}
	comms, err := NewGroup(devs)
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
func ncclRun(t *testing.T, comms []*Comm) func(fn func(ep.Communicator) error) error {
	return func(fn func(ep.Communicator) error) error {
		return ranktest.Run(t, comms, func(c *Comm) error { return fn(c) })
	}
}

func TestExchangeCounts(t *testing.T) {
	comms := ncclComms(t)
	n, m := len(comms), 3
	got := make([][]int32, n)
	err := ncclRun(t, comms)(func(c ep.Communicator) error {
		var err error
		got[c.Rank()], err = c.ExchangeCounts(ranktest.CountsSend(c.Rank(), n, m))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	ranktest.CheckCounts(t, got, m)
}

// TestAllToAllDevice exchanges device buffers with random blocks and compares with the
// in-process group on the same host data.
func TestAllToAllDevice(t *testing.T) {
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
	layout := func(me int) (sends, recvs [][]ep.Block, sr, rr int) {
		sends, recvs = make([][]ep.Block, n), make([][]ep.Block, n)
		for j := 0; j < n; j++ {
			for k := 0; k < nb; k++ {
				sends[j] = append(sends[j], ep.Block{Off: sr, Len: lens[me][j][k]})
				sr += lens[me][j][k]
			}
		}
		for i := n - 1; i >= 0; i-- {
			for k := 0; k < nb; k++ {
				recvs[i] = append(recvs[i], ep.Block{Off: rr, Len: lens[i][me][k]})
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
	grp, _ := ep.NewGroupTimeout(n, 20*time.Second)
	if err := grp.Run(func(c ep.Communicator) error {
		sends, recvs, sr, rr := layout(c.Rank())
		sb, _ := ep.HostBuffer(sendData(c.Rank(), sr), w)
		want[c.Rank()] = make([]float32, rr*w)
		rb, _ := ep.HostBuffer(want[c.Rank()], w)
		return c.AllToAll(sb, rb, sends, recvs)
	}); err != nil {
		t.Fatal(err)
	}
	got := make([][]float32, n)
	err := ncclRun(t, comms)(func(c ep.Communicator) error {
		nc := c.(*Comm)
		sends, recvs, sr, rr := layout(c.Rank())
		sd, err := nc.NewDeviceBuffer(ep.Buffer{Dtype: tensor.Float32, Rows: sr, Width: w})
		if err != nil {
			return err
		}
		defer sd.Free()
		rd, err := nc.NewDeviceBuffer(ep.Buffer{Dtype: tensor.Float32, Rows: rr, Width: w})
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

// TestBlockCopyKernel reruns TestAllToAllDevice with every list of copy runs moved by the
// block-copy kernel (the path of the large expert-parallel shapes, whose lists have one run per
// expert) and with the exchange cut into 3 chunks; package ep's TestNCCLBlockCopyKernel does
// the same for the expert-parallel ops.
func TestBlockCopyKernel(t *testing.T) {
	defer func(k, c int) { ncclknob.KernelRuns, ncclknob.ExchangeChunks = k, c }(ncclknob.KernelRuns, ncclknob.ExchangeChunks)
	ncclknob.KernelRuns, ncclknob.ExchangeChunks = 0, 3
	before := ncclknob.CopyLaunches.Load()
	t.Run("AllToAllDevice", TestAllToAllDevice)
	if ncclknob.CopyLaunches.Load() == before {
		t.Error("the block-copy kernel was never launched")
	}
}
