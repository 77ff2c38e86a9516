//go:build !amd64

package kernels

// axpyAsm is the SIMD row update, available on amd64 only: elsewhere gonum's pure-Go axpy
// could be compiled to fused multiply-adds, which would break the rounding contract, so the
// kernels use their own loops.
func axpyAsm[F Float](d, s []F, w F) bool { return false }

// hasAxpyAsm is false: the row loops never take the SIMD path here.
const hasAxpyAsm = false
