package safetensors

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	st "github.com/nlpodyssey/safetensors"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
)

// The reader is checked on files written by nlpodyssey/safetensors (an independent writer),
// with bytes built here from the format's description; the writer's files are read back by
// nlpodyssey/safetensors' Deserialize.

// le returns the little-endian bytes of the words (uint16, uint32 or uint64 each).
func le(words ...any) []byte {
	var b []byte
	for _, w := range words {
		switch x := w.(type) {
		case uint16:
			b = binary.LittleEndian.AppendUint16(b, x)
		case uint32:
			b = binary.LittleEndian.AppendUint32(b, x)
		case uint64:
			b = binary.LittleEndian.AppendUint64(b, x)
		}
	}
	return b
}

// stFile writes one tensor of each given view with nlpodyssey/safetensors.
func stFile(t testing.TB, views map[string]st.TensorView, meta map[string]string) []byte {
	t.Helper()
	buf, err := st.Serialize(views, meta)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

func tv(t testing.TB, dt st.DType, shape []uint64, data []byte) st.TensorView {
	t.Helper()
	v, err := st.NewTensorView(dt, shape, data)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// f32s is a two-element F32 file: a = [1, -2] (shape [2]).
func f32s(t testing.TB) []byte {
	return stFile(t, map[string]st.TensorView{"a": tv(t, st.F32, []uint64{2}, le(math.Float32bits(1), math.Float32bits(-2)))}, nil)
}

// TestFloat64s: every float dtype converts exactly, with its shape.
func TestFloat64s(t *testing.T) {
	buf := stFile(t, map[string]st.TensorView{
		"f32":  tv(t, st.F32, []uint64{1, 3}, le(math.Float32bits(1.5), math.Float32bits(-1e-30), math.Float32bits(3))),
		"f64":  tv(t, st.F64, []uint64{2}, le(math.Float64bits(math.Pi), math.Float64bits(-0.1))),
		"bf16": tv(t, st.BF16, []uint64{3}, le(uint16(0x3f80), uint16(0xc000), uint16(0x0001))),
		"f16":  tv(t, st.F16, []uint64{2, 1}, le(uint16(0x3c00), uint16(0x3555))),
	}, map[string]string{"k": "v"})
	ts, err := Parse(buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		want  []float64
		shape []int
	}{
		{"f32", []float64{1.5, float64(float32(-1e-30)), 3}, []int{1, 3}},
		{"f64", []float64{math.Pi, -0.1}, []int{2}},
		{"bf16", []float64{1, -2, math.Ldexp(1, -133)}, []int{3}},
		{"f16", []float64{1, 0.333251953125}, []int{2, 1}},
	} {
		v, s, err := ts.Float64s(c.name)
		if err != nil || fmt.Sprint(v, s) != fmt.Sprint(c.want, c.shape) {
			t.Errorf("%s = %v %v %v, want %v %v", c.name, v, s, err, c.want, c.shape)
		}
		if dt, ok := ts.Dtype(c.name); !ok || dt != strings.ToUpper(c.name) {
			t.Errorf("Dtype(%s) = %q %v", c.name, dt, ok)
		}
	}
	if got := fmt.Sprint(ts.Names(), ts.Metadata()); got != "[bf16 f16 f32 f64] map[k:v]" {
		t.Errorf("names and metadata: %s", got)
	}
}

// TestRead: Read copies F32, F64 and BF16 bit for bit into a slice of the same type, and
// refuses another type or size without writing.
func TestRead(t *testing.T) {
	buf := stFile(t, map[string]st.TensorView{
		"f32":  tv(t, st.F32, []uint64{2}, le(uint32(0x7fc00001), uint32(0x80000000))), // a NaN payload, -0
		"bf16": tv(t, st.BF16, []uint64{2}, le(uint16(0x7f81), uint16(0x8001))),
	}, nil)
	ts, err := Parse(buf)
	if err != nil {
		t.Fatal(err)
	}
	// nlpodyssey/safetensors refuses a scalar view: the scalar file is built by hand.
	scalar, err := Parse(rawFile(`{"f64":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}`, le(math.Float64bits(-7.25))))
	if err != nil {
		t.Fatal(err)
	}
	f := make([]float32, 2)
	if err := ts.Read("f32", f); err != nil || math.Float32bits(f[0]) != 0x7fc00001 || math.Float32bits(f[1]) != 0x80000000 {
		t.Errorf("f32: %v %v", f, err)
	}
	d := make([]float64, 1)
	if err := scalar.Read("f64", d); err != nil || d[0] != -7.25 {
		t.Errorf("f64 scalar: %v %v", d, err)
	}
	h := make([]bfloat16.BFloat16, 2)
	if err := ts.Read("bf16", h); err != nil || h[0] != 0x7f81 || h[1] != 0x8001 {
		t.Errorf("bf16: %#v %v", h, err)
	}
	for _, c := range []struct {
		name string
		dst  any
		err  string
	}{
		{"f32", make([]float64, 2), "the tensor is F32 [2], dst a []float64 of 2"},
		{"f32", make([]float32, 3), "dst a []float32 of 3"},
		{"f32", make([]int32, 2), "want []float32"},
		{"nope", make([]float32, 2), `no tensor "nope"`},
	} {
		err := ts.Read(c.name, c.dst)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("Read(%s, %T): %v, want an error containing %q", c.name, c.dst, err, c.err)
		}
	}
}

// TestWrite: nlpodyssey/safetensors reads Write's file back: dtypes, shapes, bytes and
// metadata; bad tensors are refused before anything is written.
func TestWrite(t *testing.T) {
	var b bytes.Buffer
	err := Write(&b, map[string]Tensor{
		"a":      {[]int{2, 1}, []float32{1, -2}},
		"b":      {[]int{}, []float64{math.Pi}},
		"c.d.e":  {[]int{3}, []bfloat16.BFloat16{0x3f80, 0xc000, 0x0001}},
		"empty0": {[]int{0, 4}, []float32{}},
	}, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := st.Deserialize(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, dt string
		shape    []uint64
		data     []byte
	}{
		{"a", "F32", []uint64{2, 1}, le(math.Float32bits(1), math.Float32bits(-2))},
		{"b", "F64", []uint64{}, le(math.Float64bits(math.Pi))},
		{"c.d.e", "BF16", []uint64{3}, le(uint16(0x3f80), uint16(0xc000), uint16(0x0001))},
		{"empty0", "F32", []uint64{0, 4}, nil},
	} {
		v, ok := got.Tensor(c.name)
		if !ok || v.DType().String() != c.dt || fmt.Sprint(v.Shape()) != fmt.Sprint(c.shape) || !bytes.Equal(v.Data(), c.data) {
			t.Errorf("%s: %v %v % x, want %s %v % x", c.name, v.DType(), v.Shape(), v.Data(), c.dt, c.shape, c.data)
		}
	}
	if _, md, err := st.ReadMetadata(b.Bytes()); err != nil || md.Metadata()["k"] != "v" {
		t.Errorf("metadata: %v %v", md.Metadata(), err)
	}
	for _, c := range []struct {
		name string
		t    Tensor
		err  string
	}{
		{"size", Tensor{[]int{3}, []float32{1, 2}}, "has shape [3] but 2 elements"},
		{"negative", Tensor{[]int{-1}, []float32{}}, "has shape [-1]"},
		{"int", Tensor{[]int{1}, []int32{1}}, "want []float32"},
		// Files Parse would refuse, or read back otherwise: the shape's product used to
		// wrap around to the 0 elements given; the header's metadata sits under this name.
		{"shape product wraps", Tensor{[]int{1 << 32, 1 << 32}, []float32{}}, "has shape [4294967296 4294967296]"},
		{"zero first, product beyond int", Tensor{[]int{0, 1 << 62, 1 << 62}, []float32{}}, "has shape [0 4611686018427387904 4611686018427387904]"},
		{"zero last, product beyond int", Tensor{[]int{1 << 62, 1 << 62, 0}, []float32{}}, "has shape [4611686018427387904 4611686018427387904 0]"},
		{"__metadata__", Tensor{[]int{1}, []float32{1}}, `tensor name "__metadata__"`},
		{"a\xff", Tensor{[]int{1}, []float32{1}}, `tensor name "a\xff" (want UTF-8`},
	} {
		var w bytes.Buffer
		err := Write(&w, map[string]Tensor{"ok": {[]int{1}, []float32{1}}, c.name: c.t}, nil)
		if err == nil || !strings.Contains(err.Error(), c.err) || w.Len() != 0 {
			t.Errorf("%s: %v (%d bytes written), want an error containing %q", c.name, err, w.Len(), c.err)
		}
	}
	var w bytes.Buffer
	if err := Write(&w, map[string]Tensor{"ok": {[]int{1}, []float32{1}}}, map[string]string{"k": "\xff"}); err == nil || !strings.Contains(err.Error(), "is not UTF-8") || w.Len() != 0 {
		t.Errorf("metadata not UTF-8: %v (%d bytes written)", err, w.Len())
	}
}

// TestOpen: shards open as one set; a name in two files, no files or a missing file are
// errors; reads after Close fail.
func TestOpen(t *testing.T) {
	dir := t.TempDir()
	a := stFile(t, map[string]st.TensorView{"a": tv(t, st.F32, []uint64{2}, le(math.Float32bits(1), math.Float32bits(-2)))}, map[string]string{"k": "v"})
	b := stFile(t, map[string]st.TensorView{"b": tv(t, st.BF16, []uint64{1, 1}, le(uint16(0x3f00)))}, nil)
	// c repeats a's metadata (merged), d gives its key another value (refused).
	c := stFile(t, map[string]st.TensorView{"c": tv(t, st.F32, []uint64{1}, le(math.Float32bits(3)))}, map[string]string{"k": "v", "format": "pt"})
	d := stFile(t, map[string]st.TensorView{"d": tv(t, st.F32, []uint64{1}, le(math.Float32bits(4)))}, map[string]string{"k": "w"})
	pa, pb := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	pc, pd := filepath.Join(dir, "c.safetensors"), filepath.Join(dir, "d.safetensors")
	for p, buf := range map[string][]byte{pa: a, pb: b, pc: c, pd: d} {
		if err := os.WriteFile(p, buf, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := Open(pa, pb)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(ts.Names(), " ", ts.Metadata()["k"]); got != "[a b] v" {
		t.Errorf("names and metadata: %s", got)
	}
	if v, s, err := ts.Float64s("b"); err != nil || fmt.Sprint(v, s) != "[0.5] [1 1]" {
		t.Errorf("b = %v %v %v", v, s, err)
	}
	sel := ts.Select(func(n string) bool { return n == "b" })
	if v, _, err := sel.Float64s("b"); fmt.Sprint(sel.Names(), v, err) != "[b] [0.5] <nil>" || sel.Metadata()["k"] != "v" {
		t.Errorf("Select: %v %v %v %v", sel.Names(), v, err, sel.Metadata())
	}
	if _, ok := sel.Shape("a"); ok {
		t.Error("Select kept a")
	}
	if ac, err := Open(pa, pc); err != nil || fmt.Sprint(ac.Names(), ac.Metadata()) != "[a c] map[format:pt k:v]" {
		t.Errorf("the same metadata in two files: %v %v", ac.Names(), err)
	} else {
		ac.Close()
	}
	for _, c := range []struct {
		name  string
		paths []string
		err   string
	}{
		{"none", nil, "no files"},
		{"missing", []string{filepath.Join(dir, "nope")}, "no such file"},
		{"twice", []string{pa, pa}, `"a" appears twice`},
		{"metadata", []string{pa, pb, pd}, `d.safetensors: metadata "k" is "w" here and "v" in an earlier file`},
	} {
		failed, err := Open(c.paths...)
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.err)
		}
		if err := failed.Close(); err != nil { // a deferred Close before the error check
			t.Errorf("%s: Close of the failed Open's nil set: %v", c.name, err)
		}
		// The nil set holds no tensors: its methods used to dereference it and panic.
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: a method of the failed Open's nil set panicked: %v", c.name, r)
				}
			}()
			_, shapeOK := failed.Shape("a")
			_, dtypeOK := failed.Dtype("a")
			_, _, ferr := failed.Float64s("a")
			rerr := failed.Read("a", make([]float32, 2))
			sel := failed.Select(func(string) bool { return true })
			if len(failed.Names()) != 0 || len(failed.Metadata()) != 0 || shapeOK || dtypeOK || ferr == nil || rerr == nil || len(sel.Names()) != 0 {
				t.Errorf("%s: the nil set: names %v, metadata %v, shape %v, dtype %v, Float64s %v, Read %v, Select %v",
					c.name, failed.Names(), failed.Metadata(), shapeOK, dtypeOK, ferr, rerr, sel.Names())
			}
		}()
	}
	if _, _, err := ts.Float64s("c"); err == nil {
		t.Error("missing tensor: no error")
	}
	if err := ts.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, _, err := ts.Float64s("a"); err == nil {
		t.Error("read after Close: no error")
	}
	if err := ts.Read("a", make([]float32, 2)); err == nil {
		t.Error("Read after Close: no error")
	}
}

// rawFile is a safetensors file with the given JSON header and data section.
func rawFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

// TestParseRejects: malformed headers are errors that name the problem.
func TestParseRejects(t *testing.T) {
	good := f32s(t)
	eight := make([]byte, 8)
	cases := []struct {
		name string
		file []byte
		err  string
	}{
		{"empty", nil, "not a safetensors file: 0 bytes"},
		{"truncated data", good[:len(good)-1], "data_offsets"},
		{"header past the end", binary.LittleEndian.AppendUint64(nil, 1000), "header of 1000 bytes"},
		{"not JSON", rawFile("{x", nil), "not a safetensors file: header"},
		{"unknown dtype", rawFile(`{"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}`, eight), `unknown dtype "F12"`},
		{"size mismatch", rawFile(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight), "do not hold 3 elements"},
		{"offsets reversed", rawFile(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, eight), "data_offsets [8 0]"},
		{"offsets past data", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, eight), "data_offsets [4 12]"},
		{"one offset", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, eight), "want [begin, end]"},
		{"negative dim", rawFile(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight), "bad shape [-2]"},
		{"overflowing shape", rawFile(`{"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`, eight), "bad shape"},
		{"zero first, overflowing shape", rawFile(`{"a":{"dtype":"F32","shape":[0,4611686018427387904,4611686018427387904],"data_offsets":[0,0]}}`, nil), "bad shape [0 4611686018427387904 4611686018427387904]"},
		{"zero last, overflowing shape", rawFile(`{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}}`, nil), "bad shape [4611686018427387904 4611686018427387904 0]"},
		{"unknown field", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}}`, eight), "unknown field"},
		{"bad metadata", rawFile(`{"__metadata__":{"k":1}}`, nil), "__metadata__"},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 16)), `tensor "b" starts at byte 4 of the data, want 8`},
		{"gap", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, make([]byte, 12)), `tensor "b" starts at byte 8 of the data, want 4`},
		{"first not at 0", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight), `tensor "a" starts at byte 4 of the data, want 0`},
		{"trailing bytes", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, eight), "the tensors end at byte 4 of the data, which has 8 bytes"},
		{"a name twice", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, eight), `header: "a" appears twice`},
		{"not an object", rawFile(`[1]`, nil), "not a JSON object"},
		{"data after the object", rawFile(`{} {}`, nil), "data after the JSON object"},
		{"same bytes twice", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, eight), "starts at byte 0 of the data, want 8"},
	}
	for _, c := range cases {
		if _, err := Parse(c.file); err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "not a safetensors file") {
			t.Errorf("%s: got %v, want an error containing %q and \"not a safetensors file\"", c.name, err, c.err)
		}
	}
	// Empty tensors take no bytes: one may sit anywhere the tiling reaches.
	if _, err := Parse(rawFile(`{"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight)); err != nil {
		t.Errorf("an empty tensor between two others: %v", err)
	}
	// An empty tensor at the very end of the file reads as empty (ReadAt there says EOF).
	ts, err := Parse(rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}`, le(math.Float32bits(1))))
	if err != nil {
		t.Fatal(err)
	}
	if v, shape, err := ts.Float64s("z"); err != nil || len(v) != 0 || fmt.Sprint(shape) != "[0]" {
		t.Errorf("empty tensor at the end: %v %v %v", v, shape, err)
	}
	if err := ts.Read("z", []float32{}); err != nil {
		t.Errorf("Read of the empty tensor at the end: %v", err)
	}
	ts, err = Parse(rawFile(`{"i":{"dtype":"I32","shape":[2],"data_offsets":[0,8]}}`, eight))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ts.Float64s("i"); err == nil || !strings.Contains(err.Error(), "dtype I32") {
		t.Errorf("I32 tensor: got %v, want a dtype error", err)
	}
}

func TestHalfToFloat64(t *testing.T) {
	for _, c := range []struct {
		h    uint16
		want float64
	}{{0x3c00, 1}, {0xc000, -2}, {0x0001, math.Ldexp(1, -24)}, {0x7bff, 65504}, {0x3555, 0.333251953125}, {0x7c00, math.Inf(1)}, {0xfc00, math.Inf(-1)},
		// Negative subnormals keep their sign; 0x0400 is the smallest normal, 2⁻¹⁴.
		{0x8001, -math.Ldexp(1, -24)}, {0x83ff, -1023 * math.Ldexp(1, -24)}, {0x0400, math.Ldexp(1, -14)}} {
		if got := halfToFloat64(c.h); got != c.want {
			t.Errorf("half %#04x = %v, want %v", c.h, got, c.want)
		}
	}
	if z := halfToFloat64(0x8000); z != 0 || !math.Signbit(z) {
		t.Errorf("half -0 = %v, want -0", z)
	}
	if !math.IsNaN(halfToFloat64(0x7e00)) {
		t.Error("half NaN is not NaN")
	}
}

// FuzzParse: any bytes give tensors or an error, never a panic, and every tensor read back
// decodes or errors.
func FuzzParse(f *testing.F) {
	f.Add(stFile(f, map[string]st.TensorView{"a": tv(f, st.F32, []uint64{2, 1}, le(math.Float32bits(1), math.Float32bits(2)))}, map[string]string{"k": "v"}))
	f.Add(stFile(f, map[string]st.TensorView{"b": tv(f, st.BF16, []uint64{3}, le(uint16(1), uint16(2), uint16(3)))}, nil))
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Fuzz(func(t *testing.T, b []byte) {
		ts, err := Parse(b)
		if err != nil {
			return
		}
		for _, n := range ts.Names() {
			_, _, _ = ts.Float64s(n)
			s, _ := ts.Shape(n)
			k := 1
			for _, d := range s {
				k *= d
			}
			if k < 1<<20 {
				_ = ts.Read(n, make([]float32, k))
			}
		}
	})
}

// TestReadsBeyondMemory: a tensor whose bytes, or whose float64 values, would not fit in the
// memory this process may use is an error before anything is allocated (a header can name a
// tensor of any size; the failed allocation ended the process). The limit is made small here.
func TestReadsBeyondMemory(t *testing.T) {
	const n = 1 << 18 // 1 MiB of F32
	ts, err := Parse(rawFile(fmt.Sprintf(`{"x":{"dtype":"F32","shape":[%d],"data_offsets":[0,%d]}}`, n, 4*n), make([]byte, 4*n)))
	if err != nil {
		t.Fatal(err)
	}
	defer hostmem.SetLimit(hostmem.SetLimit(3 << 20)) // the bytes fit, with their float64 values they don't
	if _, _, err := ts.Float64s("x"); err == nil || !strings.Contains(err.Error(), `tensor "x": 262144 F32 elements read as float64 need 4.194e+06 bytes, more than the 3145728 bytes`) {
		t.Errorf("Float64s: %v, want the memory error", err)
	}
	dst := make([]float32, n)
	if err := ts.Read("x", dst); err != nil {
		t.Errorf("Read within the limit: %v", err)
	}
	hostmem.SetLimit(1 << 19)
	if err := ts.Read("x", dst); err == nil || !strings.Contains(err.Error(), `tensor "x": 1048576 bytes read need 1.049e+06 bytes, more than the 524288 bytes`) {
		t.Errorf("Read: %v, want the memory error", err)
	}
}

// TestWriteNamesTheFirstBadEntry: with several bad tensors or metadata values, Write's error
// names the first in byte order, every call (it followed map order, a different one each time).
func TestWriteNamesTheFirstBadEntry(t *testing.T) {
	tensors := map[string]Tensor{}
	for _, n := range []string{"h", "c", "a", "f", "b", "g", "e", "d"} {
		tensors[n] = Tensor{Shape: []int{2, 3}, Data: []float32{1, 2, 3}}
	}
	meta := map[string]string{"k3": "\xfd", "k1": "\xff", "k2": "\xfe"}
	for i := range 50 {
		if err := Write(io.Discard, tensors, nil); err == nil || !strings.Contains(err.Error(), `tensor "a" has shape [2 3] but 3 elements`) {
			t.Fatalf("call %d: %v, want the error of tensor a", i, err)
		}
		if err := Write(io.Discard, nil, meta); err == nil || !strings.Contains(err.Error(), `metadata "k1"`) {
			t.Fatalf("call %d: %v, want the error of key k1", i, err)
		}
	}
}

// TestParseTensorInfoExactKeys: a tensor's header entry is read as the format's reference
// reader (serde) reads it: the keys "dtype", "shape" and "data_offsets" exactly, each once,
// none missing or null. encoding/json matched "DTYPE" or "Dtype" to the dtype field (so a
// BF16 tensor read as F16: other values), kept the last of a repeated key, and read a missing
// or null shape as a scalar.
func TestParseTensorInfoExactKeys(t *testing.T) {
	one := le(uint16(0x3c00)) // F16 1, BF16 2⁻⁷
	for _, c := range []struct{ name, hdr, err string }{
		{"key in another case", `{"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2],"DTYPE":"F16"}}`, `"DTYPE"`},
		{"key in another case only", `{"a":{"Dtype":"F16","shape":[1],"data_offsets":[0,2]}}`, `"Dtype"`},
		{"key twice", `{"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2],"dtype":"F16"}}`, `"dtype" appears twice`},
		{"no shape", `{"a":{"dtype":"F16","data_offsets":[0,2]}}`, `no "shape"`},
		{"null shape", `{"a":{"dtype":"F16","shape":null,"data_offsets":[0,2]}}`, `"shape" is null`},
	} {
		ts, err := Parse(rawFile(c.hdr, one))
		if err == nil {
			dt, _ := ts.Dtype("a")
			v, _, _ := ts.Float64s("a")
			t.Errorf("%s: parsed as %s %v; want an error containing %q", c.name, dt, v, c.err)
		} else if !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "gomoe: safetensors: not a safetensors file") {
			t.Errorf("%s: got %v; want an error containing %q", c.name, err, c.err)
		}
	}
}

// TestParseRejectsNonUTF8Header: the header must be UTF-8 (the reference reader refuses
// anything else); encoding/json replaced bad bytes by U+FFFD, renaming the tensor silently.
func TestParseRejectsNonUTF8Header(t *testing.T) {
	_, err := Parse(rawFile("{\"a\xff\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", le(uint16(1))))
	if err == nil || !strings.Contains(err.Error(), "not a safetensors file: header is not UTF-8") {
		t.Errorf("got %v; want a not-UTF-8 error", err)
	}
}

// TestParseEmptyHeader: an 8-byte file whose header length is 0 is "not a safetensors file"
// for Parse as for Open (Parse said "gomoe: safetensors: EOF").
func TestParseEmptyHeader(t *testing.T) {
	if _, err := Parse(make([]byte, 8)); err == nil || !strings.Contains(err.Error(), "not a safetensors file") {
		t.Errorf("got %v; want a not-a-safetensors-file error", err)
	}
}

// TestSelectNilKeep: Select(nil) must not panic (docs/errors.md: no panic escapes).
func TestSelectNilKeep(t *testing.T) {
	ts, err := Parse(rawFile(`{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}`, le(uint16(1))))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("Select(nil) panicked: %v", r)
		}
	}()
	if got := ts.Select(nil).Names(); len(got) != 1 {
		t.Errorf("Select(nil) kept %v, want every tensor", got)
	}
}

// TestParseRejectsLoneSurrogates: a \u escape of half a UTF-16 surrogate pair names no
// character; the reference reader (serde_json) refuses it, and encoding/json read it as
// U+FFFD, renaming the tensor silently ("a\ud800" read as "a\ufffd", and "\ud800" and
// "\udc00" as the same name). A well-formed pair is a character and reads as one.
func TestParseRejectsLoneSurrogates(t *testing.T) {
	data := le(uint16(0x3c00))
	for _, name := range []string{`a\ud800`, `\udc00`, `\ud800\u0041`, `\ud800x`, `\uD83D`} {
		hdr := `{"` + name + `":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}`
		ts, err := Parse(rawFile(hdr, data))
		if err == nil {
			t.Errorf("%s: parsed as %q; want an error", name, ts.Names())
		} else if !strings.Contains(err.Error(), "not a safetensors file: header: lone surrogate") {
			t.Errorf("%s: got %v; want a lone-surrogate error", name, err)
		}
	}
	if _, err := Parse(rawFile(`{"__metadata__":{"k":"\udfff"}}`, nil)); err == nil {
		t.Error(`metadata "\udfff": parsed; want an error`)
	}
	// A pair, an escaped backslash before "ud800", and U+FFFD itself are fine.
	for name, want := range map[string]string{`\ud83d\ude00`: "\U0001F600", `\\ud800`: `\ud800`, `\ufffd`: "\ufffd"} {
		ts, err := Parse(rawFile(`{"`+name+`":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}`, data))
		if err != nil || fmt.Sprint(ts.Names()) != fmt.Sprint([]string{want}) {
			t.Errorf("%s: got %q, %v; want [%q]", name, ts.Names(), err, want)
		}
	}
}

// TestParseNewerDtypes: files with the dtypes safetensors 0.6 added (F4 and the two F6 take 4
// and 6 bits an element, F8_E8M0 and C64 8 and 64) open, with the sizes the format gives
// them, so that the other tensors of such a file (an MXFP4 checkpoint's, say) can be read;
// their own values cannot be (Float64s and Read name the dtype). A sub-byte tensor whose bits
// do not fill whole bytes is refused, as the reference reader refuses it.
func TestParseNewerDtypes(t *testing.T) {
	four := le(math.Float32bits(1.5))
	ok := rawFile(`{"w":{"dtype":"F4","shape":[3,2],"data_offsets":[0,3]},"s6":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[3,6]},`+
		`"t6":{"dtype":"F6_E3M2","shape":[8],"data_offsets":[6,12]},"e":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[12,14]},`+
		`"c":{"dtype":"C64","shape":[1],"data_offsets":[14,22]},"x":{"dtype":"F32","shape":[1],"data_offsets":[22,26]}}`,
		append(make([]byte, 22), four...))
	ts, err := Parse(ok)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	got, shape, err := ts.Float64s("x")
	if err != nil || len(got) != 1 || got[0] != 1.5 || len(shape) != 1 || shape[0] != 1 {
		t.Errorf("Float64s(x) = %v, %v, %v; want [1.5], [1]", got, shape, err)
	}
	for name, want := range map[string]string{"w": "F4", "s6": "F6_E2M3", "t6": "F6_E3M2", "e": "F8_E8M0", "c": "C64"} {
		if dt, ok := ts.Dtype(name); !ok || dt != want {
			t.Errorf("Dtype(%s) = %q, %v; want %q", name, dt, ok, want)
		}
		if _, _, err := ts.Float64s(name); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Float64s(%s): %v, want an error naming %s", name, err, want)
		}
		if err := ts.Read(name, make([]float32, 1)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Read(%s) into []float32: %v, want an error naming %s", name, err, want)
		}
	}
	for _, c := range []struct{ name, file, err string }{
		{"F4, odd count", `{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, "whole number of bytes"},
		{"F6, 3 elements", `{"w":{"dtype":"F6_E3M2","shape":[3],"data_offsets":[0,3]}}`, "whole number of bytes"},
		{"F4, wrong size", `{"w":{"dtype":"F4","shape":[4],"data_offsets":[0,4]}}`, "do not hold 4 elements"},
	} {
		n := 2
		if strings.Contains(c.file, "[0,3]") {
			n = 3
		} else if strings.Contains(c.file, "[0,4]") {
			n = 4
		}
		if _, err := Parse(rawFile(c.file, make([]byte, n))); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.err)
		}
	}
}

// TestBrief: an error quotes a long metadata value cut at a rune boundary, with its length.
func TestBrief(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"v", `"v"`},
		{strings.Repeat("a", 64), `"` + strings.Repeat("a", 64) + `"`},
		{strings.Repeat("a", 65), `"` + strings.Repeat("a", 64) + `"… (65 bytes)`},
		{strings.Repeat("a", 63) + "é" + "b", `"` + strings.Repeat("a", 63) + `"… (66 bytes)`}, // é is 2 bytes: bytes 63–64
	} {
		if got := brief(c.in); got != c.want {
			t.Errorf("brief(%d bytes) = %s, want %s", len(c.in), got, c.want)
		}
	}
}
