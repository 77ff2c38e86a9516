//go:build gomoecuda

package kernels

// SetGroupedGEMM selects cublasGemmGroupedBatchedEx (true: for every call of two or more
// experts, so that small test problems take that path too) or one GEMM per expert (false) for
// the grouped matmul, and returns the previous setting.
func SetGroupedGEMM(on bool) bool {
	old := useGroupedGEMM
	useGroupedGEMM = on
	if on {
		groupedMinGEMMs = 2
	} else {
		groupedMinGEMMs = 16
	}
	return old
}

// HasGroupedGEMM reports whether the build's cuBLAS has cublasGemmGroupedBatchedEx.
func HasGroupedGEMM() bool { return hasGroupedGEMM }

// GroupedGEMMError returns the last failure of c's grouped GEMM calls (after which that call
// ran one GEMM per expert) and clears it.
func GroupedGEMMError(c *CUDA) error {
	blasStates.Lock()
	defer blasStates.Unlock()
	st, ok := blasStates.m[c]
	if !ok {
		return nil
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	err := st.lastErr
	st.lastErr = nil
	return err
}

// CloseBLAS is closeBLAS, for the tests.
func (c *CUDA) CloseBLAS() error { return c.closeBLAS() }
