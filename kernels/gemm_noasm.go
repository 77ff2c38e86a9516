//go:build !amd64 || noasm

package kernels

// gemmSetPath selects the micro-kernels by name; only the portable "go" kernels exist here.
func gemmSetPath(name string) bool {
	if name != "go" {
		return false
	}
	gemmF32, gemmF64 = gemmGoKern[float32](), gemmGoKern[float64]()
	return true
}
