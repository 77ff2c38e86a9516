// Package kernels holds gomoe's compute kernels: the routing plan builder, permute-dispatch and
// combine-unpermute, forward and backward, for float32 and float64 on the CPU (plain Go,
// parallel over GOMAXPROCS goroutines, no cgo).
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
