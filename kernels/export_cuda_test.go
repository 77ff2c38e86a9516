//go:build gomoecuda

package kernels

// SetStoreMode lets the GPU benchmark compare store policies (see storeMode).
func SetStoreMode(m int) { storeMode = m }

// StoreMode returns the current store policy.
func StoreMode() int { return storeMode }
