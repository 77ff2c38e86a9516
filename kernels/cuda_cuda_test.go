//go:build gomoecuda

package kernels_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"gorgonia.org/cu"

	. "github.com/gomoe/gomoe/kernels"

	"github.com/gomoe/gomoe/bfloat16"
)

// The GPU tests compare every CUDA kernel with the CPU kernel of this package on the same
// inputs. bfloat16 has no CPU kernel: its reference is the float32 CPU kernel on the widened
// inputs with the outputs rounded once, which is the GPU contract. Each kernel concept's GPU
// test is in its x_cuda_test.go; this file holds TestMain and the helpers they share.

var testCUDA *CUDA

func TestMain(m *testing.M) {
	dev, err := cu.GetDevice(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, "no GPU:", err)
		os.Exit(1)
	}
	ctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		fmt.Fprintln(os.Stderr, "no context:", err)
		os.Exit(1)
	}
	if testCUDA, err = NewCUDA(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	if err := testCUDA.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close:", err)
		code = 1
	}
	os.Exit(code)
}

// cuDevBuf is raw device memory for the tests.
type cuDevBuf struct {
	p cu.DevicePtr
	n int64
}

func cuAlloc(t testing.TB, n int64) cuDevBuf {
	t.Helper()
	if n == 0 {
		n = 1
	}
	var p cu.DevicePtr
	err := testCUDA.Do(func() error {
		var err error
		if p, err = cu.MemAlloc(n); err != nil {
			return err
		}
		return cu.MemsetD8(p, 0xA5, n) // garbage, so unwritten outputs show up
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testCUDA.Do(func() error { return cu.MemFree(p) }) })
	return cuDevBuf{p, n}
}

func cuUpload[T any](t testing.TB, v []T) cuDevBuf {
	t.Helper()
	var z T
	n := int64(len(v)) * int64(unsafe.Sizeof(z))
	b := cuAlloc(t, n)
	if n > 0 {
		if err := testCUDA.Do(func() error { return cu.MemcpyHtoD(b.p, unsafe.Pointer(&v[0]), n) }); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func cuDownload[T any](t testing.TB, b cuDevBuf, n int) []T {
	t.Helper()
	v := make([]T, n)
	var z T
	if n > 0 {
		if err := testCUDA.Do(func() error {
			return cu.MemcpyDtoH(unsafe.Pointer(&v[0]), b.p, int64(n)*int64(unsafe.Sizeof(z)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func cuUploadAny(t testing.TB, v any) cuDevBuf {
	switch x := v.(type) {
	case []float32:
		return cuUpload(t, x)
	case []float64:
		return cuUpload(t, x)
	case []bfloat16.BFloat16:
		return cuUpload(t, x)
	case []int32:
		return cuUpload(t, x)
	}
	t.Fatalf("cuUploadAny %T", v)
	return cuDevBuf{}
}

// cuBits returns the data as comparable bit patterns.
func cuBits(v any) []uint64 {
	switch x := v.(type) {
	case []float32:
		o := make([]uint64, len(x))
		for i, f := range x {
			o[i] = uint64(math.Float32bits(f))
		}
		return o
	case []float64:
		o := make([]uint64, len(x))
		for i, f := range x {
			o[i] = math.Float64bits(f)
		}
		return o
	case []bfloat16.BFloat16:
		o := make([]uint64, len(x))
		for i, f := range x {
			o[i] = uint64(f)
		}
		return o
	}
	panic(fmt.Sprintf("cuBits %T", v))
}

func cuDownloadAs(t testing.TB, d DType, b cuDevBuf, n int) any {
	switch d {
	case F32:
		return cuDownload[float32](t, b, n)
	case F64:
		return cuDownload[float64](t, b, n)
	}
	return cuDownload[bfloat16.BFloat16](t, b, n)
}

func cuSameBits(t *testing.T, what string, got, want any) {
	t.Helper()
	g, w := cuBits(got), cuBits(want)
	if len(g) != len(w) {
		t.Fatalf("%s: %d elements, want %d", what, len(g), len(w))
	}
	for i := range g {
		if g[i] != w[i] {
			t.Fatalf("%s: element %d has cuBits %#x, want %#x (and maybe more)", what, i, g[i], w[i])
		}
	}
}

// cpuRef runs the CPU kernel f for float32 or float64 data; bfloat16 runs the float32 kernel
// on the widened data and rounds the outputs.
func cuWiden(v any) any {
	if b, ok := v.([]bfloat16.BFloat16); ok {
		o := make([]float32, len(b))
		_ = bfloat16.ToFloat32s(o, b)
		return o
	}
	return v
}

func cuNarrow(d DType, v any) any {
	if d != BF16 {
		return v
	}
	f := v.([]float32)
	o := make([]bfloat16.BFloat16, len(f))
	_ = bfloat16.FromFloat32s(o, f)
	return o
}

func cuMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func trRand(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func f32s(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func trClose(t *testing.T, what string, got, want []float64, rel, abs float64) {
	t.Helper()
	for i := range want {
		if d := math.Abs(got[i] - want[i]); d > abs+rel*math.Abs(want[i]) || math.IsNaN(got[i]) != math.IsNaN(want[i]) {
			t.Fatalf("%s[%d] = %v, want %v (diff %g)", what, i, got[i], want[i], d)
		}
	}
}

func asF64[F float32 | float64](v []F) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(x)
	}
	return o
}
