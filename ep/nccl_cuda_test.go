//go:build gomoecuda

package ep_test

import (
	"testing"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/ep/internal/ncclknob"
	"github.com/gomoe/gomoe/ep/nccl"
)

// The expert-parallel ops over NCCL, with one rank per visible GPU (a communicator of size 1
// on a one-GPU machine): the tests' bodies are in ncclcases_cuda_test.go (package ep); this
// file makes the communicators with package ep/nccl, which package ep's own tests cannot
// import.

func ncclComms(t *testing.T) []ep.Communicator {
	t.Helper()
	n, err := nccl.DeviceCount()
	if err != nil || n == 0 {
		t.Skipf("no CUDA device: %v", err)
	}
	devs := make([]int, n)
	for i := range devs {
		devs[i] = i
	}
	comms, err := nccl.NewGroup(devs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, c := range comms {
			c.Close()
		}
	})
	out := make([]ep.Communicator, len(comms))
	for i, c := range comms {
		out[i] = c
	}
	return out
}

// TestNCCLExpertParallelEqualsSingleRank runs the layer tests over NCCL (host tensors staged
// through the device), with one rank per GPU.
func TestNCCLExpertParallelEqualsSingleRank(t *testing.T) {
	ep.NCCLExpertParallelEqualsSingleRank(t, ncclComms(t))
}

// TestNCCLDeviceDispatchCombine runs Dispatch and Combine on GPU-resident values over NCCL and
// compares y with the in-process group on host values, bit for bit.
func TestNCCLDeviceDispatchCombine(t *testing.T) {
	ep.NCCLDeviceDispatchCombine(t, ncclComms(t))
}

// TestNCCLBlockCopyKernel reruns the device exchange tests of the ops with every list of copy
// runs moved by the block-copy kernel (the path of the large expert-parallel shapes, whose
// lists have one run per expert) and with the exchange cut into 3 chunks (package ep/nccl's
// TestBlockCopyKernel does the same for the bare AllToAll).
func TestNCCLBlockCopyKernel(t *testing.T) {
	defer func(k, c int) { ncclknob.KernelRuns, ncclknob.ExchangeChunks = k, c }(ncclknob.KernelRuns, ncclknob.ExchangeChunks)
	ncclknob.KernelRuns, ncclknob.ExchangeChunks = 0, 3
	before := ncclknob.CopyLaunches.Load()
	t.Run("DeviceDispatchCombine", TestNCCLDeviceDispatchCombine)
	t.Run("ExpertParallelEqualsSingleRank", TestNCCLExpertParallelEqualsSingleRank)
	if ncclknob.CopyLaunches.Load() == before {
		t.Error("the block-copy kernel was never launched")
	}
}

// TestNCCLAbortsOnRankError: an error on one NCCL rank aborts the communicators, so that every
// rank returns an error promptly and later collectives fail with ErrAborted.
func TestNCCLAbortsOnRankError(t *testing.T) {
	ep.NCCLAbortsOnRankError(t, ncclComms)
}
