// Package moe is a Mixture-of-Experts layer for Gorgonia graphs, built on gomoe's routing
// plan, permute-dispatch, grouped expert matmul and combine-unpermute ops (package op).
//
// A layer reads like the math:
//
//	logits = x·Router                        router, optionally in its own dtype (fp32 router)
//	ids    = topK(score(logits) + bias)      softmax or sigmoid scores, group-limited top-k
//	                                         (Softmax without PreSoftmax selects, and scores
//	                                         the groups, on the logits: see Config.Groups)
//	probs  = the chosen scores               renormalised (or not) and scaled
//	                                         (both: the fused router, op.RouterTopK and
//	                                         op.RouterProbs, one launch each on the GPU)
//	plan   = route(ids)                      dropless, or capacity with drop by prob/position
//	xp     = permute(x, plan)                [T,H] -> expert-major rows [R,H]
//	hp     = act(xp ⊛ W1)                    grouped matmul per expert segment; SwiGLU on the
//	                                         gate and up halves of W1 [E,H,2F], or GELU
//	yp     = hp ⊛ W2                         (probs optionally applied to hp here)
//	y      = unpermute(yp, probs, plan)      weighted combine back to [T,H]
//	         + shared(x)                     optional always-on shared experts
//
// together with the load-balancing losses (per micro-batch and per sequence), the router
// z-loss, and the per-step statistics (tokens per expert, dropped tokens). The auxiliary-loss
// free balancing of DeepSeek-V3 keeps an expert bias outside the gradient, updated after each
// optimiser step with Layer.UpdateExpertBias.
//
// # Use
//
//	layer, err := moe.New(g, "moe0", moe.Config{Hidden: 512, FFN: 1024, Experts: 8, TopK: 2,
//		AuxLossCoeff: 1e-2})
//	out, err := layer.Forward(x)          // x [T,512]
//	cost := G.Must(G.Add(taskLoss(out.Y), out.Loss)) // add the weighted aux losses to the cost
//	G.Grad(cost, layer.Learnables()...)
//
// x may be [T,H] or a batch of sequences [B,S,H] (Y then has x's shape). Output.Loss is
// never nil: without loss coefficients it is a zero scalar, so the cost line above always
// builds.
//
// # Evaluation
//
// Layer.Infer is the evaluation and inference forward: no router jitter, no losses, and the
// capacity of Config.EvalCapacityFactor and Config.MinCapacity (DeepSpeed's
// eval_capacity_factor and min_capacity). It builds forward ops only, so a machine without
// gradients runs it: a tape machine on g.SubgraphRoots(out.Y) in the training graph, or
// Gorgonia's lisp machine with G.ExecuteFwdOnly. See ExampleLayer_Infer. An evaluation layer
// in a graph of its own takes the trained layer's State (the Learnables and, with
// Config.ExpertBias, the expert bias): with the Learnables alone, an ExpertBias layer routes
// with its initial zero bias.
//
// # Expert parallelism
//
// NewExpertParallel builds the layer for one rank of N expert-parallel ranks (an
// ep.Communicator: in-process ep.Group ranks, or nccl.Comm of package ep/nccl under the
// gomoecuda build tag). The
// router, the expert bias and the shared experts are replicated on every rank; the routed
// experts are sharded, rank r holding experts [r·E/N, (r+1)·E/N) with the initial values New
// gives them, so N ranks start from the same model as one. Each rank calls Forward on its own
// T tokens, and the tokens travel to their experts' ranks and back through package ep's
// differentiable dispatch and combine. Y, the input gradient and the gradients of the local
// expert weights equal the single-rank layer's on the concatenated tokens. What differs:
//
//   - The gradients of the replicated weights (Layer.Replicated: Router, SharedW1,
//     SharedW2) are this rank's share only: sum them over the ranks with
//     ep.SumGradients(comm, layer.Replicated()...) before the solver step (in train.Step's
//     after), or the replicas drift apart. Clip with ep.ClipGradNorm after it, by the norm
//     over all ranks, and leave the optimiser's MaxGradNorm at 0: that one takes each rank's
//     own norm, which differs between ranks (their expert gradients differ), and would scale
//     the replicated weights' updates differently.
//   - The balancing losses (AuxLoss, SeqAuxLoss), the z-loss, Output.Counts, Output.Stats and
//     UpdateExpertBias see this rank's tokens only; sum the counts over the ranks
//     (ep.SumCounts) before UpdateExpertBias to keep the expert bias identical everywhere.
//   - In capacity mode the capacity C is per expert and sending rank: each rank may send up
//     to C of its own tokens to every expert, so an expert takes up to N·C rows in all.
//   - Router jitter (Config.JitterEps) draws the same noise sequence on every rank.
//
// All shapes are static: the number of tokens T comes from x, the permuted buffer has a
// fixed row count R, and which rows each expert owns changes from step to step inside the
// plan's value. Nothing waits on the host between ops.
//
// The layer's tests check it against a dense reference (every expert on every token,
// weighted by a masked prob matrix) written independently with Gorgonia built-ins, against
// float64 central differences, and against hand-computed capacity tables.
package moe
