// Package simd holds gomoe's Go assembly: the CPU GEMM micro-kernels, the vector sigmoid and
// the row softmax's exp, the float64-lane row kernels of RMSNorm and the dot products, the
// weighted row sums of the combine and the permute backward, and the vector Adam step that
// package kernels calls on amd64 (and not under the noasm build tag).
//
// They live in a package of their own because package kernels uses cgo in its CUDA build (tag
// gomoecuda), and Go does not assemble Go assembly files in a package that uses cgo.
package simd
