package safetensors_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/safetensors"
)

// Example writes a small safetensors file with Write, opens it with Open (headers only) and
// reads its tensors back: Read bit for bit in their own dtype, Float64s converted to float64.
func Example() {
	dir, err := os.MkdirTemp("", "gomoe-safetensors")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "model.safetensors")

	f, err := os.Create(path)
	if err != nil {
		log.Fatal(err)
	}
	err = safetensors.Write(f, map[string]safetensors.Tensor{
		"gate.weight": {Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		"bias":        {Shape: []int{2}, Data: []bfloat16.BFloat16{bfloat16.FromFloat32(0.5), bfloat16.FromFloat32(-1)}},
	}, map[string]string{"format": "pt"})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		log.Fatal(err)
	}

	ts, err := safetensors.Open(path) // one path per shard
	if err != nil {
		log.Fatal(err)
	}
	defer ts.Close()
	for _, name := range ts.Names() {
		shape, _ := ts.Shape(name)
		dt, _ := ts.Dtype(name)
		fmt.Println(name, dt, shape)
	}
	w := make([]float32, 6)
	if err := ts.Read("gate.weight", w); err != nil {
		log.Fatal(err)
	}
	b, _, err := ts.Float64s("bias")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(w, b, ts.Metadata()["format"])
	// Output:
	// bias BF16 [2]
	// gate.weight F32 [2 3]
	// [1 2 3 4 5 6] [0.5 -1] pt
}
