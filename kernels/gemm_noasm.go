//go:build !amd64 || noasm

package kernels

// gemmSetPath selects the micro-kernels by name: the portable "go" kernels, or one of
// gemmExtraPaths such as "openblas"; no assembly kernels exist here.
func gemmSetPath(name string) bool {
	if set, ok := gemmExtraPaths[name]; ok {
		set()
		return true
	}
	if name != "go" {
		return false
	}
	gemmF32, gemmF64 = gemmGoKern[float32](), gemmGoKern[float64]()
	return true
}
