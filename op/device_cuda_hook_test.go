//go:build gomoecuda

package op

// RegisterCUDAForTest re-installs the CUDA backend: some tests of this package swap the
// package's device backend for a fake one and restore nil.
func RegisterCUDAForTest() { device = cudaKernels{} }
