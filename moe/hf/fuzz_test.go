package hf

import (
	"testing"

	"github.com/nlpodyssey/safetensors"
)

// FuzzParseSafetensors: any bytes give tensors or an error, never a panic, and every tensor
// read back decodes or errors.
func FuzzParseSafetensors(f *testing.F) {
	f.Add(encode(f, map[string]hfTensor{"a": {[]int{2, 1}, []float64{1, 2}}}, "", safetensors.F32, map[string]string{"k": "v"}))
	f.Add(encode(f, map[string]hfTensor{"b": {[]int{3}, []float64{1, 2, 3}}}, "", safetensors.BF16, nil))
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := ParseSafetensors(b)
		if err != nil {
			return
		}
		for _, n := range ts.Names() {
			_, _, _ = ts.Float64s(n)
		}
	})
}
