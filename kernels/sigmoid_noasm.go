//go:build !amd64 || noasm

package kernels

// hasSigmoidAsm is false: the activations use the float64 sigmoid here.
const hasSigmoidAsm = false

// sigmoidPair32 is the vector sigmoid of amd64 (sigmoid_amd64.go); here it computes each
// element with the float64 sigmoid, rounded once.
func sigmoidPair32(s, sm, x []float32) {
	for i, v := range x {
		s[i], sm[i] = float32(sigmoid(float64(v))), float32(sigmoid(-float64(v)))
	}
}
