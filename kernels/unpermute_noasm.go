//go:build !amd64 || noasm

package kernels

// unpermBwdAsm is the vector prefix of unpermBwdRow on amd64 (unpermute_amd64.go); it
// processes nothing here.
func unpermBwdAsm[F Float](l *[8]float64, d, g, yp []F, w F, flags int) int { return 0 }
