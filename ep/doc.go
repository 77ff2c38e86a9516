// Package ep is expert parallelism for gomoe: the E experts of a Mixture-of-Experts layer are
// sharded over N ranks (rank r holds experts [r·E/N, (r+1)·E/N)), and tokens travel to the
// ranks of their experts and back, as differentiable Gorgonia ops.
//
// Each rank builds the same graph over its own T tokens:
//
//	plan, _ := ep.NewPlan(ids, nil, kernels.Geometry{E: E, A: 1}, comm) // collective
//	xr, _ := ep.Dispatch(x, plan)                  // [R',H] rows for the local experts
//	local, _ := plan.Local()                       // the plan of the received rows
//	z, _ := op.GroupedMatMul(xr, w1Local, local)
//	...                                            // the experts, on local
//	y, _ := ep.Combine(yr, probs, plan)            // [T,H], probs weighting fused
//
// A graph is one rank's part of the step, run by that rank's machine: NewPlan refuses a plan
// for a graph that already holds another rank's plan of the same group (for communicators
// with GroupKey, as the in-process Group's and nccl.Comm have), since the two ranks'
// collectives in one machine would wait for each other.
//
// Dispatch is op.Permute with the plan's send part — experts are numbered rank-major, so the
// expert-major layout is also the per-rank send layout — followed by an all-to-all whose
// blocks (one per peer and expert) land expert-major over the local experts, rows from rank 0
// first (so in ascending global token order, exactly the rows and order of the single-rank
// layout). Combine is the reverse all-to-all followed by op.Unpermute with the
// probs. The backward of each exchange is the other one. The results and gradients equal the
// single-rank layer's bit for bit (the tests check it with 1, 2 and 4 in-process ranks).
//
// # The replicated weights
//
// Weights that every rank holds whole (an MoE layer's router and shared experts:
// moe.Layer.Replicated) get from the backward pass only this rank's tokens' share of their
// gradient. SumGradients adds those shares over the ranks (an all-reduce, in rank order in
// float64, so every rank gets the same bits) before the solver's step, ClipGradNorm clips
// by the norm over all ranks (the same on every rank; the optimiser's own MaxGradNorm would
// take this rank's norm only), and SumCounts adds the per-expert counts that expert-bias
// balancing reads:
//
//	err := train.Step(vm, opt, layer.Learnables(), func() error { // opt.MaxGradNorm = 0
//		if err := ep.SumGradients(comm, layer.Replicated()...); err != nil {
//			return err
//		}
//		_, err := ep.ClipGradNorm(comm, 1, layer.Learnables(), layer.Replicated())
//		return err
//	})
//
// # Static shapes and the host sync
//
// Gorgonia shapes are static, so the receive buffer has the static upper bound of
// LocalGeometry: in dropless mode R' = N·T·min(K, E/N) + (E/N)·(A−1) rows (every token of every
// rank could pick min(K, E/N) of this rank's experts); in capacity mode each rank keeps at most
// C rows per expert before sending and R' = (E/N)·roundup(N·C, A). Unused rows are zero.
//
// The plan node runs the counts exchange: every rank sends every other rank its row counts for
// that rank's experts (plus its geometry, so that mismatched ranks fail at once), and then the
// global token index of every row, which becomes the local plan's tokenOf. Its output, the
// expert-parallel plan (Plan.Node), stays in host memory and holds everything Dispatch and
// Combine need for their block lists. So a layer has exactly one host synchronisation per step:
// with device values the plan op copies the send plan to the host (ncclSend/ncclRecv take their
// sizes from the host anyway), and the counts come back from the counts exchange. Dispatch,
// Combine and their backward add none: they pass device pointers and host-side sizes to NCCL.
// Plan.Local uploads the local plan for the experts' ops without waiting.
//
// # Communicators
//
// A Communicator is an all-to-all of variable-size row blocks plus the counts exchange.
// Group is an in-process implementation for N goroutine ranks (tests, CPU); nccl.Comm (package
// ep/nccl, build tag gomoecuda, a package of its own so that importing ep does not link
// libnccl) runs over NVIDIA's NCCL, one GPU per rank, ranks as goroutines of one process or
// as processes on one or several nodes. All ranks must run the same collectives in the same
// order; ep's ops abort their communicator on any error (Guard makes other ops do so: the send
// plan of NewPlan and the top-k of moe's expert-parallel layer), Group.Run aborts the group
// when a rank fails, and RunRank does the same for a rank that runs alone (NCCL), so that no
// rank waits forever. A group is unusable after an abort.
//
// # Staging (NCCL)
//
// NCCL's point-to-point calls are slow when a rank posts hundreds of small messages per peer
// (one per expert block), so the NCCL communicator (package ep/nccl) sends one message per peer
// and direction.
// The send layout holds a peer's blocks contiguously, but the expert-major local layout
// interleaves the blocks of all ranks; on that side the message goes through staging memory
// that the communicator allocates on first use and keeps (grown when an exchange needs more):
// Dispatch receives each peer's rows contiguously there and copies every block into place
// afterwards, Combine copies the blocks there before it sends. That is one extra device copy
// of the rows that cross ranks, (N−1)/N of the rows, and staging memory of the same size
// (for DeepSeek-V3 shapes in bf16, T=4096, K=8, H=7168, on 4 ranks: about 350 MB per rank).
// The copies are merged where contiguous; a list of more than 8 copies moves with one launch
// of a block-copy kernel (few copies: one cudaMemcpyAsync each, whose host cost of several µs
// apiece made long lists host-bound). A rank's blocks to itself are copied straight into place,
// beside the NCCL kernel on a second stream, on a small grid.
// A peer with at most two non-empty blocks (few experts per rank) gets one message per block,
// straight into place, without staging, which measured faster there.
// The result is bit for bit the same as in-place delivery. See README.md for measurements.
//
// See README.md beside this file for how it scales to 2, 4 and 8 GPUs and to several nodes.
package ep
