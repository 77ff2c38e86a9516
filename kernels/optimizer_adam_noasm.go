//go:build !amd64 || noasm

package kernels

// hasAdamAsm is false: AdamUpdate runs its Go loop only.
const hasAdamAsm = false

// adam32 handles no element here.
func adam32(p, g, m, v []float32, k *[10]float32) int { return 0 }
