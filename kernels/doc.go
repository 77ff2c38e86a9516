// Package kernels holds gomoe's compute kernels: the routing plan builder, permute-dispatch and
// combine-unpermute, forward and backward, the grouped expert matmul and the packed GEMM
// engine, activations, row ops, normalisations, top-k routing and its gather, dtype casts,
// routing losses and optimiser updates.
//
// # Files
//
// Kernels are filed by concept x: x.go holds the CPU kernel, x_cuda.go its CUDA launcher (build
// tag gomoecuda), x.cuh the CUDA kernel and x_test.go, x_cuda_test.go their tests, so
// `ls kernels/x*` shows one concept whole. The concepts: plan, permute, unpermute,
// permute_probs (CPU kernels PermuteProbsForward and PermuteProbsBackward in permute.go), binary (element-wise arithmetic of the device
// engine; CPU side in Gorgonia), activation, rowop (row softmax and normalisation), topk,
// gather_topk, router (the fused router: scores, top-k and probs), logsumexp and expert_load
// (CPU only), cast, optimizer, grad_norm (gradient-norm clipping on the device), scale_rows, the
// examples' layers bias (bias add and its column sum), relu, rmsnorm, cross_entropy and
// embedding, the routing losses balance_loss and z_loss, gemm and blas (the packed CPU GEMM,
// cuBLAS), split_bf16 (float32 as three bfloat16 pieces, and SplitGemm, float32-accurate
// GEMMs on bfloat16 tensor cores), grouped_matmul and gmm_* (the grouped matmul; CUTLASS), blockcopy (ep's staged
// copies) and syncprobe. gomoe.cu is the translation unit of gomoe.fatbin: gomoe.cuh's shared
// device helpers and every x.cuh above; cuda_cuda.go is the engine (the CUDA type, device
// dtypes, status bits and launch plumbing). Helpers that several concepts share live in the
// engine files: gomoe.cuh on the device, cuda_cuda.go for the launchers, safety.go, vec.go
// and parallel.go on the CPU, cuda_cuda_test.go and ref_test.go for the tests. Tests that
// cross concepts (hostile_, reliability_, fuzz_, bench_) are named after their kind.
//
// On the CPU they are Go (the GEMM micro-kernels, the vector sigmoid and the softmax's exp,
// RMSNorm's rows, the weighted row sums of the combine and the Adam step in Go assembly on
// amd64, package internal/simd), parallel over GOMAXPROCS goroutines, with no cgo,
// for float32 and float64 (bfloat16 through conversions where the package says so). With the
// build tag gomoecuda, the CUDA type runs their GPU twins on device pointers, in float32,
// float64 and bfloat16: gomoe's kernels from the embedded fatbins (gomoe.cu, gmm.cu), cuBLAS,
// and CUTLASS's grouped GEMMs (gmm_sm90* for bfloat16 on sm_90a, gmm_simt* for float32 and
// float64; see docs/grouped-gemm.md); that build uses cgo and links the CUDA driver, the
// runtime and cuBLAS.
//
// # The routing plan
//
// A plan maps (token t, slot k) pairs to rows of an expert-major buffer of R rows. Its
// [Geometry] (T tokens, K slots, E experts, alignment A, and in [Capacity] mode the capacity C)
// fixes every size statically, so a Gorgonia graph can hold it: R = T·K + E·(A−1) in
// [Dropless] mode and E·roundup(C,A) in Capacity mode. The plan itself is one flat int32
// vector (see [Geometry.PlanLen] and [Geometry.View]) holding counts [E], offsets [E+1],
// rowOf [T·K] and tokenOf [R]. Inside each expert's segment rows follow ascending token order,
// and nothing in the plan depends on thread timing: the same ids give the same plan on every
// machine and GOMAXPROCS.
//
// # Determinism
//
// Every kernel writes each output element from exactly one goroutine and accumulates in a
// fixed order (slots in k order, hidden units in an order fixed by H alone), so results are
// bitwise identical across runs and across GOMAXPROCS values. The rounding contract of each kernel is written
// next to it; the CUDA kernels follow the same contract.
package kernels
