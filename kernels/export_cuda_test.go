//go:build gomoecuda

package kernels

// SetStoreMode lets the GPU benchmark compare store policies (see storeMode).
func SetStoreMode(m int) { storeMode = m }

// StoreMode returns the current store policy.
func StoreMode() int { return storeMode }

// BF16DotVariants are the bfloat16 dprobs kernel's variants (bf16DotVariants).
var BF16DotVariants = bf16DotVariants

// SetBF16DotVariant makes every bfloat16 dprobs launch use the variant v (one of
// BF16DotVariants; "" for the default choice by K) and returns the previous setting.
func SetBF16DotVariant(v string) string { old := bf16DotForce; bf16DotForce = v; return old }
