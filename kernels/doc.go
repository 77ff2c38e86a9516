// Package kernels holds gomoe's compute kernels: the routing plan builder, permute-dispatch and
// combine-unpermute, forward and backward, the grouped expert matmul and the packed GEMM
// engine, activations, normalisations, routing losses and optimiser updates.
//
// On the CPU they are Go (the GEMM micro-kernels, the vector sigmoid and the Adam step in Go
// assembly on amd64, package internal/simd), parallel over GOMAXPROCS goroutines, with no cgo,
// for float32 and float64 (bfloat16 through conversions where the package says so). With the
// build tag gomoecuda, the CUDA type runs their GPU twins on device pointers, in float32,
// float64 and bfloat16: gomoe's kernels from the embedded fatbins (gomoe.cu, gmm.cu), cuBLAS,
// and CUTLASS's grouped GEMM for sm_90a (gmm_sm90*.cu; see docs/grouped-gemm.md); that build
// uses cgo and links the CUDA driver, the runtime and cuBLAS.
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
