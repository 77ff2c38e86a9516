// Package op holds gomoe's Gorgonia ops: the routing plan, permute-dispatch and
// combine-unpermute of a Mixture-of-Experts layer, as functions on *gorgonia.Node in
// Gorgonia's own style.
//
// A layer routes each of T tokens to K of E experts. The router gives expert ids [T,K] int32
// (-1: no expert) and probs [T,K]; NewPlan turns the ids into a [Plan], a non-differentiable
// int32 node whose static [kernels.Geometry] fixes every shape. Permute then copies each token's
// row x[t] to the K rows of its experts in an expert-major buffer xp [R,H] (each expert's rows
// contiguous, in token order, segments aligned to A rows), the experts transform their
// segments, and Unpermute combines the rows back into tokens, y[t] = Σ_k probs[t,k]·yp[row].
// PermuteProbs permutes the probs alongside when an expert applies them itself.
//
//	plan, _ := op.NewPlan(ids, nil, kernels.Geometry{E: 8, A: 1}) // dropless
//	xp, _ := op.Permute(x, plan)                                 // [R,H]
//	yp := expertFFN(xp, plan)                                    // [R,F] -> [R,H]
//	y, _ := op.Unpermute(yp, probs, plan)                        // [T,H]
//
// In [kernels.Dropless] mode every (token, slot) pair gets a row and R = T·K + E·(A−1) is an
// upper bound; in [kernels.Capacity] mode each expert keeps at most C pairs (dropping by
// position or by lowest prob) and R = E·roundup(C, A). Rows that hold no token are zero.
//
// # Gradients
//
// Permute, PermuteProbs and Unpermute are differentiable with respect to their float inputs,
// through both of Gorgonia's paths: symbolic (G.Grad and the tape machine) and dual values
// (DoDiff, the lisp machine). Their backward ops are differentiable as well (each is the
// adjoint of a forward op), and are gradient-checked like the forward ops. The plan has no
// gradient; the router learns through the probs.
//
// # Dtypes, determinism and errors
//
// Data is float32, float64 or bfloat16 (package bfloat16; its probs are float32, the CPU
// widens to float32, runs the float32 kernels and rounds once); otherwise probs have the data
// dtype; ids and plans are int32. Every
// result is bitwise reproducible across runs and GOMAXPROCS values (see package kernels for the
// rounding contract). Shapes are checked when a node is built; dtypes, ids and plans are checked
// when it runs, so a bad value gives an error from the machine's RunAll, never a panic or a
// write into the caller's tensors.
//
// # The rest of a layer, and training on the GPU
//
// Around the dispatch and combine, the ops an MoE layer and a small model need, each with a
// CPU kernel and a CUDA twin: routing (TopK, GatherTopK, Softmax, Sigmoid, RowNormalize,
// Scale, Cast, MixedMatMul), the expert FFN (GroupedMatMul, SwiGLU, SwiGLUPacked, GELU,
// ScaleRows), the routing losses (BalanceLoss, ZLoss, AddScalars), and the layers of the
// examples (MatMul, BiasAdd, ReLU, RMSNorm, CrossEntropy, Embedding). With them a whole
// training step runs on the device engine (package device), where Gorgonia's own activations,
// reductions and broadcasts cannot. JitterNoise draws its noise on the host and uploads it;
// RowLogSumExp and ExpertLoad have no CUDA twin and refuse device values (the z-loss and the
// balancing losses compute what a step needs of them on the device).
//
// # Devices
//
// Each op's Do runs the CPU kernels on host tensors. For values that live in device memory it
// asks package device for their backend (device.Of: in builds with the gomoecuda tag, the
// device engine's CUDA kernels; none in the default build) and runs the op there instead; a
// mix of host and device inputs is an error, since nothing is copied silently (one exception: the
// loss ops accept the host scalar that G.Grad seeds a cost's gradient with). OnDevice,
// HostCopy and WriteBack move values across for code outside a graph.
package op
