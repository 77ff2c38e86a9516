package hf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// All safetensors reading of the package is in this file, so that it can move to a shared
// safetensors package later.
//
// Why not github.com/nlpodyssey/safetensors for reading: its Deserialize takes the whole file
// as one byte slice, and a checkpoint's shards are tens of GB, of which one MoE block needs a
// few tensors. This reader parses and checks the header only, then reads each tensor's bytes
// from the file when asked (ReadAt). The package's tests write their files with
// nlpodyssey/safetensors' Serialize, an independent writer.

// maxHeader bounds the JSON header (the format's reference reader uses 100 MB).
const maxHeader = 100 << 20

// dtypeSizes are the element sizes of the safetensors dtypes.
var dtypeSizes = map[string]int64{
	"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
	"BF16": 2, "I32": 4, "U32": 4, "F32": 4, "F64": 8, "I64": 8, "U64": 8,
}

// Tensors is a set of named tensors in safetensors files: a whole checkpoint (its shards) or
// one block's weights. The headers are read when the set is opened, a tensor's values when
// they are asked for. Close releases the files.
type Tensors struct {
	entries map[string]entry
	meta    map[string]string
	files   []*os.File
}

// entry is one tensor: where its bytes are and how to read them.
type entry struct {
	src   io.ReaderAt
	dtype string
	shape []int
	off   int64 // from the start of src
	size  int64 // bytes
}

// ReadSafetensors opens the safetensors files at paths (the shards of one checkpoint, say)
// as one set, reading their headers only. A name found in two files is an error.
func ReadSafetensors(paths ...string) (*Tensors, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("gomoe: hf: ReadSafetensors: no files")
	}
	ts := newTensors()
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			ts.Close()
			return nil, fmt.Errorf("gomoe: hf: %w", err)
		}
		ts.files = append(ts.files, f)
		st, err := f.Stat()
		if err == nil {
			err = ts.add(f, st.Size())
		}
		if err != nil {
			ts.Close()
			return nil, fmt.Errorf("gomoe: hf: %s: %w", p, err)
		}
	}
	return ts, nil
}

// ParseSafetensors reads one safetensors file held in buf (which the result keeps).
func ParseSafetensors(buf []byte) (*Tensors, error) {
	ts := newTensors()
	if err := ts.add(bytes.NewReader(buf), int64(len(buf))); err != nil {
		return nil, fmt.Errorf("gomoe: hf: %w", err)
	}
	return ts, nil
}

func newTensors() *Tensors {
	return &Tensors{entries: map[string]entry{}, meta: map[string]string{}}
}

// Close closes the files ReadSafetensors opened; the set cannot read values afterwards.
func (ts *Tensors) Close() error {
	var errs []error
	for _, f := range ts.files {
		errs = append(errs, f.Close())
	}
	ts.files = nil
	return errors.Join(errs...)
}

// add reads the header of the file in src (size bytes) and adds its tensors.
func (ts *Tensors) add(src io.ReaderAt, size int64) error {
	var nb [8]byte
	if size < 8 {
		return fmt.Errorf("not a safetensors file: %d bytes", size)
	}
	if _, err := src.ReadAt(nb[:], 0); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint64(nb[:])
	if n > maxHeader || int64(n) > size-8 {
		return fmt.Errorf("not a safetensors file: header of %d bytes in a file of %d", n, size)
	}
	hdr := make([]byte, n)
	if _, err := src.ReadAt(hdr, 8); err != nil {
		return err
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return fmt.Errorf("not a safetensors file: header: %w", err)
	}
	start, dataLen := 8+int64(n), size-8-int64(n)
	for name, msg := range raw {
		if name == "__metadata__" {
			var md map[string]string
			if err := json.Unmarshal(msg, &md); err != nil {
				return fmt.Errorf("header: __metadata__: %w", err)
			}
			for k, v := range md {
				ts.meta[k] = v
			}
			continue
		}
		var info struct {
			Dtype       string  `json:"dtype"`
			Shape       []int64 `json:"shape"`
			DataOffsets []int64 `json:"data_offsets"`
		}
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&info); err != nil {
			return fmt.Errorf("header: tensor %q: %w", name, err)
		}
		e, err := checkEntry(name, info.Dtype, info.Shape, info.DataOffsets, dataLen)
		if err != nil {
			return fmt.Errorf("header: %w", err)
		}
		if _, dup := ts.entries[name]; dup {
			return fmt.Errorf("tensor %q appears twice", name)
		}
		e.src, e.off = src, start+e.off
		ts.entries[name] = e
	}
	return nil
}

// checkEntry checks one header entry against a data section of dataLen bytes.
func checkEntry(name, dtype string, shape, offsets []int64, dataLen int64) (entry, error) {
	es, ok := dtypeSizes[dtype]
	if !ok {
		return entry{}, fmt.Errorf("tensor %q: unknown dtype %q", name, dtype)
	}
	if len(offsets) != 2 {
		return entry{}, fmt.Errorf("tensor %q: data_offsets %v, want [begin, end]", name, offsets)
	}
	elems := int64(1)
	s := make([]int, len(shape))
	for i, d := range shape {
		if d < 0 || (d > 0 && elems > math.MaxInt64/es/d) {
			return entry{}, fmt.Errorf("tensor %q: bad shape %v", name, shape)
		}
		elems *= d
		s[i] = int(d)
	}
	b, en := offsets[0], offsets[1]
	if b < 0 || en < b || en > dataLen || en-b != elems*es {
		return entry{}, fmt.Errorf("tensor %q: data_offsets %v do not hold %d elements of %s in %d bytes of data", name, offsets, elems, dtype, dataLen)
	}
	return entry{dtype: dtype, shape: s, off: b, size: en - b}, nil
}

// Names returns the tensors' names, sorted.
func (ts *Tensors) Names() []string {
	names := make([]string, 0, len(ts.entries))
	for n := range ts.entries {
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
	e, ok := ts.entries[name]
	if !ok {
		return nil, false
	}
	return append([]int(nil), e.shape...), true
}

// Float64s reads the named tensor (F32, F64, BF16 or F16 elements, little-endian, row major)
// and converts it to float64, exactly; it returns the values and the shape.
func (ts *Tensors) Float64s(name string) ([]float64, []int, error) {
	e, ok := ts.entries[name]
	if !ok {
		return nil, nil, fmt.Errorf("gomoe: hf: no tensor %q", name)
	}
	if e.dtype != "F32" && e.dtype != "F64" && e.dtype != "BF16" && e.dtype != "F16" {
		return nil, nil, fmt.Errorf("gomoe: hf: tensor %q has dtype %s, want F32, F64, BF16 or F16", name, e.dtype)
	}
	b := make([]byte, e.size)
	if _, err := e.src.ReadAt(b, e.off); err != nil {
		return nil, nil, fmt.Errorf("gomoe: hf: tensor %q: %w", name, err)
	}
	out := make([]float64, e.size/dtypeSizes[e.dtype])
	switch e.dtype {
	case "F32":
		for i := range out {
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])))
		}
	case "F64":
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case "BF16":
		for i := range out {
			out[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16))
		}
	case "F16":
		for i := range out {
			out[i] = halfToFloat64(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
	return out, append([]int(nil), e.shape...), nil
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
