package safetensors

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"unicode/utf8"

	st "github.com/nlpodyssey/safetensors"
)

// Tensor is one tensor to write: its shape and its elements, row major, as a []float32
// (F32), []float64 (F64) or []bfloat16.BFloat16 (BF16). A shape of no dimensions is a
// scalar of one element.
type Tensor struct {
	Shape []int
	Data  any
}

// view is an st.View of little-endian bytes (st.NewTensorView counts a scalar of shape []
// as zero elements, so gomoe keeps its own).
type view struct {
	dt    st.DType
	shape []uint64
	data  []byte
}

func (v view) DType() st.DType { return v.dt }
func (v view) Shape() []uint64 { return v.shape }
func (v view) Data() []byte    { return v.data }
func (v view) DataLen() uint64 { return uint64(len(v.data)) }

// Write writes the tensors, by name, and the string metadata meta as one safetensors file
// to w. Everything is checked before anything is written: every tensor (a supported slice
// type, as many elements as its shape, no negative dimension), and that the file reads back
// as written (names and metadata valid UTF-8, no tensor named "__metadata__").
// With several bad entries the error names the first in byte order of the keys, then of the
// names (map order gave a different one from call to call).
func Write(w io.Writer, tensors map[string]Tensor, meta map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(meta)) {
		if v := meta[k]; !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("gomoe: safetensors: Write: metadata %q = %q is not UTF-8 (the header is JSON)", k, v)
		}
	}
	views := make(map[string]view, len(tensors))
	for _, name := range slices.Sorted(maps.Keys(tensors)) {
		t := tensors[name]
		if name == "__metadata__" || !utf8.ValidString(name) {
			return fmt.Errorf("gomoe: safetensors: Write: tensor name %q (want UTF-8, not \"__metadata__\", the header's metadata)", name)
		}
		dt, n, err := dtypeOf(t.Data)
		if err != nil {
			return fmt.Errorf("gomoe: safetensors: Write: tensor %q: %w", name, err)
		}
		v := view{shape: make([]uint64, len(t.Shape))}
		want, zero := 1, false
		for i, d := range t.Shape {
			// No product of the non-zero dimensions that wraps around, whatever their order
			// (as Parse checks).
			if d < 0 || (d > 0 && want > math.MaxInt/d) {
				return fmt.Errorf("gomoe: safetensors: Write: tensor %q has shape %v", name, t.Shape)
			}
			v.shape[i], want, zero = uint64(d), want*max(d, 1), zero || d == 0
		}
		if zero {
			want = 0
		}
		if n != want {
			return fmt.Errorf("gomoe: safetensors: Write: tensor %q has shape %v but %d elements", name, t.Shape, n)
		}
		if v.dt, err = st.ParseDType(dt); err != nil {
			return fmt.Errorf("gomoe: safetensors: Write: tensor %q: %w", name, err)
		}
		views[name] = v
	}
	for name, v := range views {
		v.data = encode(tensors[name].Data)
		views[name] = v
	}
	if err := st.SerializeToWriter(views, meta, w); err != nil {
		return fmt.Errorf("gomoe: safetensors: Write: %w", err)
	}
	return nil
}
