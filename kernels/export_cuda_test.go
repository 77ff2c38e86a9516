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

// SetBF16DotBlocks sets how many blocks of the bfloat16 dprobs kernels take tokens (-1: one
// per token; 0: one wave, the default; n > 0: n) and returns the previous setting.
func SetBF16DotBlocks(n int) int { old := bf16DotBlocks; bf16DotBlocks = n; return old }

// SetProgrammaticLaunch turns c's programmatic launches on (where the GPU and driver take them)
// or off and returns whether they were on.
func SetProgrammaticLaunch(c *CUDA, on bool) (was bool) {
	was = c.pdl
	_ = c.do(func() error { c.pdl = on && c.pdlCapable(); return nil })
	return was
}

// ProgrammaticLaunch reports whether c launches with programmatic stream serialization.
func ProgrammaticLaunch(c *CUDA) bool { return c.pdl }
