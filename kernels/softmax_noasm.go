//go:build !amd64 || noasm

package kernels

import "math"

// hasExpAsm is false: the float32 row softmax takes the float64 path here.
const hasExpAsm = false

// expSub32 is the vector exp of amd64 (softmax_amd64.go); here each element is the float64
// exp rounded once.
func expSub32(y, x []float32, m float32) {
	for i, v := range x {
		y[i] = float32(math.Exp(float64(v) - float64(m)))
	}
}
