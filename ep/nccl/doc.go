// Package nccl is an ep.Communicator over NVIDIA's NCCL library, one GPU per rank: Comm. It is
// a package of its own so that a program that imports gomoe's other packages (moe, op, train,
// ep) with the gomoecuda build tag does not link libnccl; a program that runs expert
// parallelism over NCCL imports this package too.
//
// The communicator is built only with the build tag gomoecuda (cgo, nccl.h and the CUDA
// runtime; see ep/nccl_env.sh for finding NCCL where PyTorch installed it). The default build
// holds the layout of its staged exchange (stage.go), which is plain Go and tested on the CPU.
//
// Ranks: one goroutine per GPU in one process (NewGroup), or one process per GPU, on one node
// or many (NewID on rank 0, shared out of band, then New on every rank). A Comm must be on the
// GPU of the device engine whose values its ranks exchange (package device).
//
//	comms, err := nccl.NewGroup([]int{0, 1}) // two ranks on GPUs 0 and 1
//	// rank r: plan, err := ep.NewPlan(ids, probs, g, comms[r]) ...
//	err = ep.RunRank(comms[r], step)        // aborts the communicator on an error
//
// Staging, the block-copy kernel and the measurements behind them: ep/README.md.
package nccl
