// Package ncclknob holds the tuning knobs of package ep/nccl's staged exchange, in a package
// of their own so that the GPU tests of package ep (which cannot see ep/nccl's unexported
// names) can turn them too. The environment variables GOMOE_EP_BLOCKCOPY, GOMOE_EP_SELFGRID and
// GOMOE_EP_CHUNKS set them for measurements.
package ncclknob

import (
	"math"
	"os"
	"strconv"
	"sync/atomic"
)

// ExchangeChunks is the number of NCCL groups a staged exchange is cut into (planExchange),
// read by nccl.New. More than one measured slower on 2 and 4 H200s (each group costs a launch,
// and the copies are host-bound), so it is 1; the tests try 3.
var ExchangeChunks = 1

// KernelRuns is the most copy runs a list may have and still move as device-to-device copies
// (one cudaMemcpyAsync each); longer lists move with one launch of the block-copy kernel
// (kernels.CUDA.CopyBlocks), whose descriptors (appendDescs) go to the device in one upload
// per exchange from pinned memory, without a host sync. Each cudaMemcpyAsync costs about
// 6–8 µs of host time (measured on 2 H200s, 2026-11-26, also with one process per GPU and with
// cudaMemcpyBatchAsync), so with 64–128 experts per rank an exchange of copies is host-bound:
// dispatch at 0.43–0.56 of a raw all-to-all (dsv3) against 0.81–0.85 with the kernel (200
// iterations; te16k 0.77–0.79 against 0.80–0.85). The kernel's self copies run beside the
// NCCL kernel on SelfGrid thread blocks. GOMOE_EP_BLOCKCOPY=0 in the environment turns the
// kernel off, for measurements; the tests set KernelRuns to 0 to check it on every list.
var KernelRuns = 8

func init() {
	if os.Getenv("GOMOE_EP_BLOCKCOPY") == "0" {
		KernelRuns = math.MaxInt
	}
	// GOMOE_EP_SELFGRID=n runs the self copies' block-copy kernel on n thread blocks.
	if n, err := strconv.Atoi(os.Getenv("GOMOE_EP_SELFGRID")); err == nil && n >= 1 {
		SelfGrid = n
	}
	// GOMOE_EP_CHUNKS=n cuts every staged exchange into n NCCL groups, for measurements.
	if n, err := strconv.Atoi(os.Getenv("GOMOE_EP_CHUNKS")); err == nil && n >= 1 && n <= 64 {
		ExchangeChunks = n
	}
}

// SelfGrid is the most thread blocks of the block-copy kernel that moves a rank's blocks to
// itself: those copies run beside the NCCL kernels, so a full grid takes SMs the transfer
// needs (measured: 32 blocks gave dsv3/te16k 0.83/0.85 of the raw all-to-all, 1024 blocks
// 0.81/0.80). The staging copies run before or after the transfer, on a full grid.
var SelfGrid = 32

// CopyLaunches counts the block-copy launches, for the tests.
var CopyLaunches atomic.Int64
