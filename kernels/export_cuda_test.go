//go:build gomoecuda

package kernels

// SetStoreMode lets the GPU benchmark compare store policies (see storeMode).
func SetStoreMode(m int) { storeMode = m }

// StoreMode returns the current store policy.
func StoreMode() int { return storeMode }

// SetBF16DotBatch picks the batched (true) or slot-by-slot bfloat16 dprobs kernel and returns
// the previous choice (see bf16DotBatch).
func SetBF16DotBatch(b bool) bool { old := bf16DotBatch; bf16DotBatch = b; return old }
