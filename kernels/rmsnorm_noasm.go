//go:build !amd64 || noasm

package kernels

// hasRowAsm is false: dot64 and the RMSNorm rows run their Go loops here.
const hasRowAsm = false

// The vector prefixes of amd64 (rmsnorm_amd64.go) process nothing here.

func dotLanes32(l *[8]float64, a, b []float32) int       { return 0 }
func dot3Lanes32(l *[8]float64, a, b, c []float32) int   { return 0 }
func rmsScale32(y, x, g []float32, r float64) int        { return 0 }
func rmsBack32(dx, x, g, dy []float32, r, c float64) int { return 0 }
