// Package safetensors reads and writes safetensors files
// (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw little-endian data.
// It is gomoe's one implementation of the format: train's checkpoints and moe/hf's
// transformers weights both go through it.
//
// Reading is lazy: [Open] and [Parse] read and check the headers only (dtypes, shapes, byte
// ranges that tile each file's data section, names unique across shards; every dtype of the
// format, also those gomoe cannot convert), and a tensor's
// bytes are read from the file when it is asked for, so that one block of a checkpoint of
// tens of GB costs the memory of that block. [Tensors.Float64s] converts F32, F64, BF16 and F16 elements to
// float64 exactly; [Tensors.Read] copies F32, F64 or BF16 elements into a slice of the same
// type, bit for bit.
//
// Writing ([Write]) encodes float32, float64 and bfloat16 slices and hands them to
// github.com/nlpodyssey/safetensors, which writes the header and the data section. That
// package parses a file only from one byte slice holding all of it, hence gomoe's reader.
//
// The tests check the reader on files written by nlpodyssey/safetensors, an independent
// writer, and the writer's files with that package's reader.
package safetensors

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/internal/regfile"
)

// maxHeader bounds the JSON header (the format's reference reader uses 100 MB).
const maxHeader = 100 << 20

// dtypeBits are the element sizes, in bits, of the safetensors dtypes (those of the format's
// reference implementation, safetensors 0.6: F4 and the F6 types pack their elements, so a
// tensor of them must fill whole bytes).
var dtypeBits = map[string]int64{
	"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
	"BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
	"I16": 16, "U16": 16, "F16": 16, "BF16": 16,
	"I32": 32, "U32": 32, "F32": 32,
	"F64": 64, "I64": 64, "U64": 64, "C64": 64,
}

// dtypeSize is the element size in bytes of a dtype of whole bytes.
func dtypeSize(dtype string) int64 { return dtypeBits[dtype] / 8 }

// Tensors is a set of named tensors in safetensors files: a whole checkpoint (its shards),
// one block's weights, a training checkpoint. The headers are read when the set is opened, a
// tensor's values when they are asked for. Close releases the files. The nil *Tensors of a
// failed Open holds no tensors.
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

// Open opens the safetensors files at paths (the shards of one checkpoint, say) as one set,
// reading their headers only. A name found in two files is an error, and so is a metadata key
// whose value differs between two files (the same key and value in every shard, as
// transformers writes "format", is merged). A file that is not a
// safetensors file gives an error containing "not a safetensors file" and the file's path;
// so does a path that is not a regular file (a named pipe would block the open until a
// writer comes, forever if none does).
func Open(paths ...string) (*Tensors, error) {
	if len(paths) == 0 {
		return nil, fmt.Errorf("gomoe: safetensors: Open: no files")
	}
	ts := newTensors()
	for _, p := range paths {
		f, err := regfile.Open(p)
		if err != nil {
			ts.Close()
			if errors.Is(err, regfile.ErrNotRegular) {
				return nil, fmt.Errorf("gomoe: safetensors: %w: %w", errFormat, err)
			}
			return nil, fmt.Errorf("gomoe: safetensors: %w", err)
		}
		ts.files = append(ts.files, f)
		st, err := f.Stat()
		if err == nil {
			err = ts.add(f, st.Size())
		}
		if err != nil {
			ts.Close()
			return nil, fmt.Errorf("gomoe: safetensors: %s: %w", p, err)
		}
	}
	return ts, nil
}

// Parse reads one safetensors file held in buf (which the result keeps and reads from).
func Parse(buf []byte) (*Tensors, error) {
	ts := newTensors()
	if err := ts.add(bytes.NewReader(buf), int64(len(buf))); err != nil {
		return nil, fmt.Errorf("gomoe: safetensors: %w", err)
	}
	return ts, nil
}

func newTensors() *Tensors {
	return &Tensors{entries: map[string]entry{}, meta: map[string]string{}}
}

// Close closes the files Open opened; the set, and any made from it by Select, cannot read
// values afterwards.
func (ts *Tensors) Close() error {
	if ts == nil { // Open failed: nothing to close
		return nil
	}
	var errs []error
	for _, f := range ts.files {
		errs = append(errs, f.Close())
	}
	ts.files = nil
	return errors.Join(errs...)
}

// errFormat marks the errors of a file that breaks the format.
var errFormat = errors.New("not a safetensors file")

// add reads the header of the file in src (size bytes) and adds its tensors.
func (ts *Tensors) add(src io.ReaderAt, size int64) error {
	var nb [8]byte
	if size < 8 {
		return fmt.Errorf("%w: %d bytes", errFormat, size)
	}
	if _, err := src.ReadAt(nb[:], 0); err != nil {
		return err
	}
	n := binary.LittleEndian.Uint64(nb[:])
	if n > maxHeader || int64(n) > size-8 {
		return fmt.Errorf("%w: header of %d bytes in a file of %d", errFormat, n, size)
	}
	hdr := make([]byte, n)
	if n > 0 { // bytes.Reader's ReadAt at the end of its bytes says io.EOF even for no bytes
		if _, err := src.ReadAt(hdr, 8); err != nil {
			return err
		}
	}
	if !utf8.Valid(hdr) {
		// The reference reader refuses it; encoding/json would put U+FFFD for the bad bytes
		// and rename the tensor silently.
		return fmt.Errorf("%w: header is not UTF-8", errFormat)
	}
	if err := checkSurrogates(hdr); err != nil {
		return fmt.Errorf("%w: header: %w", errFormat, err)
	}
	raw, err := headerEntries(hdr)
	if err != nil {
		return fmt.Errorf("%w: header: %w", errFormat, err)
	}
	start, dataLen := 8+int64(n), size-8-int64(n)
	var spans []span // this file's tensors
	for _, kv := range raw {
		name, msg := kv.name, kv.msg
		if name == "__metadata__" {
			var md map[string]string
			if err := json.Unmarshal(msg, &md); err != nil {
				return fmt.Errorf("%w: header: __metadata__: %w", errFormat, err)
			}
			for k, v := range md {
				if old, ok := ts.meta[k]; ok && old != v {
					return fmt.Errorf("metadata %q is %s here and %s in an earlier file", k, brief(v), brief(old))
				}
			}
			for k, v := range md {
				ts.meta[k] = v
			}
			continue
		}
		info, err := decodeInfo(msg)
		if err != nil {
			return fmt.Errorf("%w: header: tensor %q: %w", errFormat, name, err)
		}
		e, err := checkEntry(name, info.Dtype, info.Shape, info.DataOffsets, dataLen)
		if err != nil {
			return fmt.Errorf("%w: header: %w", errFormat, err)
		}
		if _, dup := ts.entries[name]; dup {
			return fmt.Errorf("tensor %q appears twice", name)
		}
		spans = append(spans, span{name, e.off, e.off + e.size})
		e.src, e.off = src, start+e.off
		ts.entries[name] = e
	}
	return checkTiling(spans, dataLen)
}

// checkSurrogates refuses a \u escape of half a UTF-16 surrogate pair, not followed (for a high
// half) by the \u escape of a low half: it names no character, the reference reader refuses
// it, and encoding/json would read it as U+FFFD, renaming the tensor silently. A backslash
// is always the start of an escape (outside strings it is a JSON syntax error).
func checkSurrogates(hdr []byte) error {
	hex := func(i int) (rune, bool) { // the code unit of the \u escape at hdr[i:]
		if i+6 > len(hdr) || hdr[i] != '\\' || hdr[i+1] != 'u' {
			return 0, false
		}
		var r rune
		for _, c := range hdr[i+2 : i+6] {
			switch {
			case '0' <= c && c <= '9':
				r = r<<4 | rune(c-'0')
			case 'a' <= c && c <= 'f':
				r = r<<4 | rune(c-'a'+10)
			case 'A' <= c && c <= 'F':
				r = r<<4 | rune(c-'A'+10)
			default:
				return 0, false
			}
		}
		return r, true
	}
	for i := 0; i < len(hdr); i++ {
		if hdr[i] != '\\' {
			continue
		}
		r, ok := hex(i)
		if !ok {
			i++ // another escape: skip its character (an escaped backslash among them)
			continue
		}
		switch {
		case 0xd800 <= r && r < 0xdc00:
			if lo, ok := hex(i + 6); ok && 0xdc00 <= lo && lo < 0xe000 {
				i += 11 // the pair
				continue
			}
			return fmt.Errorf("lone surrogate %s at byte %d (not followed by the escape of a low surrogate)", hdr[i:i+6], i)
		case 0xdc00 <= r && r < 0xe000:
			return fmt.Errorf("lone surrogate %s at byte %d (not preceded by the escape of a high surrogate)", hdr[i:i+6], i)
		}
		i += 5
	}
	return nil
}

// tensorInfo is one tensor's entry in a header.
type tensorInfo struct {
	Dtype       string
	Shape       []int64
	DataOffsets []int64
}

// decodeInfo decodes a tensor's header entry as the format's reference reader (serde) does:
// the keys "dtype", "shape" and "data_offsets", exactly (encoding/json would match "DTYPE" to
// the dtype field), each once and none missing or null (encoding/json kept the last of a
// repeated key and read a missing or null shape as a scalar).
func decodeInfo(msg json.RawMessage) (tensorInfo, error) {
	var info tensorInfo
	kvs, err := headerEntries(msg)
	if err != nil {
		return info, err
	}
	fields := map[string]any{"dtype": &info.Dtype, "shape": &info.Shape, "data_offsets": &info.DataOffsets}
	for _, kv := range kvs {
		dst, ok := fields[kv.name]
		if !ok {
			return info, fmt.Errorf("unknown field %q", kv.name)
		}
		if string(kv.msg) == "null" {
			return info, fmt.Errorf("%q is null", kv.name)
		}
		if err := json.Unmarshal(kv.msg, dst); err != nil {
			return info, fmt.Errorf("%q: %w", kv.name, err)
		}
		delete(fields, kv.name)
	}
	for _, k := range []string{"dtype", "shape", "data_offsets"} {
		if _, missing := fields[k]; missing {
			return info, fmt.Errorf("no %q", k)
		}
	}
	return info, nil
}

// headerEntry is one name and its JSON value in a header.
type headerEntry struct {
	name string
	msg  json.RawMessage
}

// headerEntries returns the entries of the JSON object hdr in their order. A name that
// appears twice is an error (json.Unmarshal into a map would keep the last silently).
func headerEntries(hdr []byte) ([]headerEntry, error) {
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("not a JSON object (%v)", cmp.Or(err, fmt.Errorf("starts with %v", tok)))
	}
	var out []headerEntry
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name := tok.(string) // an object's keys are strings
		if seen[name] {
			return nil, fmt.Errorf("%q appears twice", name)
		}
		seen[name] = true
		var msg json.RawMessage
		if err := dec.Decode(&msg); err != nil {
			return nil, fmt.Errorf("%q: %w", name, err)
		}
		out = append(out, headerEntry{name, msg})
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the JSON object")
	}
	return out, nil
}

// span is a tensor's byte range [lo, hi) in its file's data section.
type span struct {
	name   string
	lo, hi int64
}

// checkTiling checks that the tensors' byte ranges tile the data section of dataLen bytes: in
// order of their offsets, each starts where the one before ends, the first at 0, and the last
// ends at dataLen, as the format asks (and Hugging Face's reader checks). So no two tensors
// share bytes and no byte is left over.
func checkTiling(spans []span, dataLen int64) error {
	slices.SortFunc(spans, func(a, b span) int { return cmp.Or(cmp.Compare(a.lo, b.lo), cmp.Compare(a.hi, b.hi)) })
	pos := int64(0)
	for _, sp := range spans {
		if sp.lo != pos {
			return fmt.Errorf("%w: header: tensor %q starts at byte %d of the data, want %d (tensors must tile the data, without overlaps or gaps)", errFormat, sp.name, sp.lo, pos)
		}
		pos = sp.hi
	}
	if pos != dataLen {
		return fmt.Errorf("%w: header: the tensors end at byte %d of the data, which has %d bytes", errFormat, pos, dataLen)
	}
	return nil
}

// checkEntry checks one header entry against a data section of dataLen bytes.
func checkEntry(name, dtype string, shape, offsets []int64, dataLen int64) (entry, error) {
	bits, ok := dtypeBits[dtype]
	if !ok {
		return entry{}, fmt.Errorf("tensor %q: unknown dtype %q", name, dtype)
	}
	if len(offsets) != 2 {
		return entry{}, fmt.Errorf("tensor %q: data_offsets %v, want [begin, end]", name, offsets)
	}
	// The product of the non-zero dimensions must fit whatever their order, also in a tensor
	// with a zero dimension: [0, 2^62, 2^62] is refused as [2^62, 2^62, 0] is.
	elems, zero := int64(1), false
	s := make([]int, len(shape))
	for i, d := range shape {
		if d < 0 || (d > 0 && elems > math.MaxInt64/bits/d) {
			return entry{}, fmt.Errorf("tensor %q: bad shape %v", name, shape)
		}
		elems, zero = elems*max(d, 1), zero || d == 0
		s[i] = int(d)
	}
	if zero {
		elems = 0
	}
	if elems*bits%8 != 0 {
		return entry{}, fmt.Errorf("tensor %q: %d elements of %s (%d bits each) are not a whole number of bytes", name, elems, dtype, bits)
	}
	b, en := offsets[0], offsets[1]
	if b < 0 || en < b || en > dataLen || en-b != elems*bits/8 {
		return entry{}, fmt.Errorf("tensor %q: data_offsets %v do not hold %d elements of %s in %d bytes of data", name, offsets, elems, dtype, dataLen)
	}
	return entry{dtype: dtype, shape: s, off: b, size: en - b}, nil
}

// Names returns the tensors' names, sorted.
func (ts *Tensors) Names() []string {
	if ts == nil { // the set of a failed Open: no tensors
		return nil
	}
	names := make([]string, 0, len(ts.entries))
	for n := range ts.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Metadata returns the files' string metadata (the "__metadata__" of the headers), merged:
// Open refuses files that give one key two values.
func (ts *Tensors) Metadata() map[string]string {
	if ts == nil {
		return map[string]string{}
	}
	out := make(map[string]string, len(ts.meta))
	for k, v := range ts.meta {
		out[k] = v
	}
	return out
}

// Shape returns the shape of the named tensor, and whether it exists.
func (ts *Tensors) Shape(name string) ([]int, bool) {
	e, ok := ts.entry(name)
	if !ok {
		return nil, false
	}
	return append([]int(nil), e.shape...), true
}

// Dtype returns the safetensors dtype of the named tensor ("F32", "BF16", "I64", …), and
// whether it exists.
func (ts *Tensors) Dtype(name string) (string, bool) {
	e, ok := ts.entry(name)
	return e.dtype, ok
}

// Select returns the tensors of ts whose names keep accepts, read from the same files (and
// with the same metadata): a block's weights without the other tensors under its prefix,
// say. A nil keep keeps every tensor. Closing ts closes the files of the selection too.
func (ts *Tensors) Select(keep func(name string) bool) *Tensors {
	if ts == nil {
		return &Tensors{entries: map[string]entry{}}
	}
	out := &Tensors{entries: map[string]entry{}, meta: ts.meta}
	for n, e := range ts.entries {
		if keep == nil || keep(n) {
			out.entries[n] = e
		}
	}
	return out
}

// raw reads the bytes of the named tensor.
func (ts *Tensors) raw(name string) (entry, []byte, error) {
	e, ok := ts.entry(name)
	if !ok {
		return e, nil, fmt.Errorf("gomoe: safetensors: no tensor %q", name)
	}
	if err := hostmem.Check(fmt.Sprintf("gomoe: safetensors: tensor %q: %d bytes read", name, e.size), float64(e.size)); err != nil {
		return e, nil, err // a header can name more bytes than memory holds (a failed allocation ends the process)
	}
	b := make([]byte, e.size)
	if e.size == 0 { // ReadAt at the end of a source says io.EOF even for no bytes
		return e, b, nil
	}
	if _, err := e.src.ReadAt(b, e.off); err != nil {
		return e, nil, fmt.Errorf("gomoe: safetensors: tensor %q: %w", name, err)
	}
	return e, b, nil
}

// entry is the named tensor's entry, and whether it exists: none in a nil set (the result of
// a failed Open), whose methods used to dereference it.
func (ts *Tensors) entry(name string) (entry, bool) {
	if ts == nil {
		return entry{}, false
	}
	e, ok := ts.entries[name]
	return e, ok
}

// Read copies the named tensor's elements, row major, into dst: a []float32 for F32, a
// []float64 for F64 or a []bfloat16.BFloat16 for BF16, of exactly the tensor's number of
// elements. It is an error if the dtype or the size differ; dst is then unchanged.
func (ts *Tensors) Read(name string, dst any) error {
	e, ok := ts.entry(name)
	if !ok {
		return fmt.Errorf("gomoe: safetensors: no tensor %q", name)
	}
	dt, n, err := dtypeOf(dst)
	if err != nil {
		return fmt.Errorf("gomoe: safetensors: Read %q: %w", name, err)
	}
	if dt != e.dtype || int64(n)*dtypeSize(dt) != e.size {
		return fmt.Errorf("gomoe: safetensors: Read %q: the tensor is %s %v, dst a %T of %d elements", name, e.dtype, e.shape, dst, n)
	}
	_, b, err := ts.raw(name)
	if err != nil {
		return err
	}
	decode(dst, b)
	return nil
}

// Float64s reads the named tensor (F32, F64, BF16 or F16 elements) and converts it to
// float64, exactly; it returns the values, row major, and the shape.
func (ts *Tensors) Float64s(name string) ([]float64, []int, error) {
	e, ok := ts.entry(name)
	if !ok {
		return nil, nil, fmt.Errorf("gomoe: safetensors: no tensor %q", name)
	}
	if e.dtype != "F32" && e.dtype != "F64" && e.dtype != "BF16" && e.dtype != "F16" {
		return nil, nil, fmt.Errorf("gomoe: safetensors: tensor %q has dtype %s, want F32, F64, BF16 or F16", name, e.dtype)
	}
	n := e.size / dtypeSize(e.dtype)
	// The bytes read, their float64 values and, for F32 and BF16, a decoded copy between them.
	need := float64(e.size) + 8*float64(n)
	if e.dtype == "F32" || e.dtype == "BF16" {
		need += float64(e.size)
	}
	if err := hostmem.Check(fmt.Sprintf("gomoe: safetensors: tensor %q: %d %s elements read as float64", name, n, e.dtype), need); err != nil {
		return nil, nil, err
	}
	_, b, err := ts.raw(name)
	if err != nil {
		return nil, nil, err
	}
	out := make([]float64, n)
	switch e.dtype {
	case "F32":
		f := make([]float32, len(out))
		decode(f, b)
		for i, x := range f {
			out[i] = float64(x)
		}
	case "F64":
		decode(out, b)
	case "BF16":
		h := make([]bfloat16.BFloat16, len(out))
		decode(h, b)
		for i, x := range h {
			out[i] = x.Float64()
		}
	case "F16":
		for i := range out {
			out[i] = halfToFloat64(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
	return out, append([]int(nil), e.shape...), nil
}

// dtypeOf returns the safetensors dtype and the length of a slice Read and Write take.
func dtypeOf(x any) (string, int, error) {
	switch s := x.(type) {
	case []float32:
		return "F32", len(s), nil
	case []float64:
		return "F64", len(s), nil
	case []bfloat16.BFloat16:
		return "BF16", len(s), nil
	}
	return "", 0, fmt.Errorf("data of type %T, want []float32, []float64 or []bfloat16.BFloat16", x)
}

// decode writes the little-endian elements in b into dst (a slice dtypeOf accepts, of
// len(b)/element size elements).
func decode(dst any, b []byte) {
	switch s := dst.(type) {
	case []float32:
		for i := range s {
			s[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case []float64:
		for i := range s {
			s[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case []bfloat16.BFloat16:
		for i := range s {
			s[i] = bfloat16.BFloat16(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
}

// encode returns the little-endian bytes of a slice dtypeOf accepts.
func encode(src any) []byte {
	var b []byte
	switch s := src.(type) {
	case []float32:
		b = make([]byte, 0, 4*len(s))
		for _, f := range s {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
		}
	case []float64:
		b = make([]byte, 0, 8*len(s))
		for _, f := range s {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(f))
		}
	case []bfloat16.BFloat16:
		b = make([]byte, 0, 2*len(s))
		for _, f := range s {
			b = binary.LittleEndian.AppendUint16(b, uint16(f))
		}
	}
	return b
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

// brief quotes s for an error message, cut to its first 64 bytes (at a rune boundary) when
// longer: a metadata value may run to megabytes.
func brief(s string) string {
	if len(s) <= 64 {
		return strconv.Quote(s)
	}
	n := 64
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:n]), len(s))
}
