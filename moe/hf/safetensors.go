package hf

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"sort"

	"github.com/nlpodyssey/safetensors"
)

// All safetensors reading of the package is in this file (github.com/nlpodyssey/safetensors
// parses and validates the header; this file decodes the elements), so that it can move to a
// shared safetensors package later.

// Tensors is a set of named tensors read from safetensors files: a whole checkpoint (its
// shards) or one block's weights. Values are decoded when asked for.
type Tensors struct {
	views map[string]safetensors.TensorView
	meta  map[string]string
}

// ReadSafetensors reads the safetensors files at paths (the shards of one checkpoint, say)
// into one set. A name found in two files is an error. The files are read whole into memory.
func ReadSafetensors(paths ...string) (*Tensors, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("gomoe: hf: ReadSafetensors: no files")
	}
	ts := &Tensors{views: map[string]safetensors.TensorView{}, meta: map[string]string{}}
	for _, p := range paths {
		buf, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("gomoe: hf: %w", err)
		}
		if err := ts.add(buf); err != nil {
			return nil, fmt.Errorf("gomoe: hf: %s: %w", p, err)
		}
	}
	return ts, nil
}

// ParseSafetensors reads one safetensors file held in buf (which the result keeps).
func ParseSafetensors(buf []byte) (*Tensors, error) {
	ts := &Tensors{views: map[string]safetensors.TensorView{}, meta: map[string]string{}}
	if err := ts.add(buf); err != nil {
		return nil, fmt.Errorf("gomoe: hf: %w", err)
	}
	return ts, nil
}

func (ts *Tensors) add(buf []byte) error {
	st, err := safetensors.Deserialize(buf)
	if err != nil {
		return fmt.Errorf("not a safetensors file: %w", err)
	}
	for _, nt := range st.Tensors() {
		if _, dup := ts.views[nt.Name]; dup {
			return fmt.Errorf("tensor %q appears twice", nt.Name)
		}
		ts.views[nt.Name] = nt.TensorView
	}
	_, md, err := safetensors.ReadMetadata(buf)
	if err != nil {
		return err
	}
	for k, v := range md.Metadata() {
		ts.meta[k] = v
	}
	return nil
}

// Names returns the tensors' names, sorted.
func (ts *Tensors) Names() []string {
	names := make([]string, 0, len(ts.views))
	for n := range ts.views {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Metadata returns the files' string metadata (the "__metadata__" of the header), merged.
func (ts *Tensors) Metadata() map[string]string {
	out := make(map[string]string, len(ts.meta))
	for k, v := range ts.meta {
		out[k] = v
	}
	return out
}

// Shape returns the shape of the named tensor, and whether it exists.
func (ts *Tensors) Shape(name string) ([]int, bool) {
	v, ok := ts.views[name]
	if !ok {
		return nil, false
	}
	s := make([]int, len(v.Shape()))
	for i, d := range v.Shape() {
		s[i] = int(d)
	}
	return s, true
}

// Float64s decodes the named tensor (F32, F64, BF16 or F16 elements, little-endian, row
// major) to float64, exactly, and returns its shape.
func (ts *Tensors) Float64s(name string) ([]float64, []int, error) {
	v, ok := ts.views[name]
	if !ok {
		return nil, nil, fmt.Errorf("gomoe: hf: no tensor %q", name)
	}
	shape, _ := ts.Shape(name)
	n := 1
	for _, d := range shape {
		n *= d
	}
	b := v.Data()
	size := int(v.DType().Size())
	if len(b) != n*size {
		return nil, nil, fmt.Errorf("gomoe: hf: tensor %q has %d bytes for %d elements of %v", name, len(b), n, v.DType())
	}
	out := make([]float64, n)
	switch v.DType() {
	case safetensors.F32:
		for i := range out {
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
	case safetensors.F64:
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case safetensors.BF16:
		for i := range out {
			out[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16))
		}
	case safetensors.F16:
		for i := range out {
			out[i] = halfToFloat64(binary.LittleEndian.Uint16(b[2*i:]))
		}
	default:
		return nil, nil, fmt.Errorf("gomoe: hf: tensor %q has dtype %v, want F32, F64, BF16 or F16", name, v.DType())
	}
	return out, shape, nil
}

// halfToFloat64 is the IEEE 754 binary16 value of h.
func halfToFloat64(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp := int(h>>10) & 0x1f
	frac := float64(h & 0x3ff)
	switch exp {
	case 0:
		return sign * frac * math.Ldexp(1, -24)
	case 0x1f:
		if frac != 0 {
			return math.NaN()
		}
		return math.Inf(int(sign))
	}
	return sign * (1 + frac/1024) * math.Ldexp(1, exp-15)
}
