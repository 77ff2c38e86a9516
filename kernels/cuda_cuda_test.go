//go:build gomoecuda

package kernels_test

import (
	"errors"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
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

// gpuNvcc12 loads the nvcc 12 pair of sm_90a kernels on every driver, to time it against the
// nvcc 13 pair in the same run.
var gpuNvcc12 = flag.Bool("gomoe.nvcc12", false, "load the nvcc 12 pair of sm_90a grouped GEMM kernels on every driver")

func TestMain(m *testing.M) {
	flag.Parse()
	if *gpuNvcc12 {
		SetGMM90NoCU13(true)
	}
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

// cuFillNormal fills buf with normal values times scale in d's type: a block of up to 2²⁰ drawn
// on the host, repeated across the buffer by device copies. Benchmarks of long GEMMs use it:
// at the power limit the GPU's clock follows its power draw, which depends on the data (a
// constant fill toggles few bits and draws less than real values do).
func cuFillNormal(t testing.TB, rng *rand.Rand, d DType, buf cuDevBuf, scale float64) {
	t.Helper()
	es := int64(d.Size())
	blk := min(buf.n/es, 1<<20)
	v := cuRandData(rng, int(blk))
	for i := range v {
		v[i] *= scale
	}
	src := cuUploadAny(t, cuElems(d, v))
	err := testCUDA.Do(func() error {
		if err := cu.MemcpyDtoD(buf.p, src.p, blk*es); err != nil {
			return err
		}
		for done := blk * es; done < buf.n; done *= 2 {
			if err := cu.MemcpyDtoD(buf.p+cu.DevicePtr(done), buf.p, min(done, buf.n-done)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
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

// cuWiden returns bfloat16 data widened (exactly) to float32, other data as it is.
func cuWiden(v any) any {
	if b, ok := v.([]bfloat16.BFloat16); ok {
		o := make([]float32, len(b))
		_ = bfloat16.ToFloat32s(o, b)
		return o
	}
	return v
}

// cuNarrow rounds float32 data to bfloat16 for d = BF16 and returns other data as it is.
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

// nnConv converts float64 test data to F (the layer kernels' GPU tests).
func nnConv[F float32 | float64](v []float64) []F {
	o := make([]F, len(v))
	for i, x := range v {
		o[i] = F(x)
	}
	return o
}

// nnCase holds the inputs of the layer kernels' GPU tests (bias_, relu_, rmsnorm_ and
// cross_entropy_cuda_test.go) for one shape, drawn from one seed in one order: x, dy
// [rows, cols], b [cols] and one-hot target rows on the host and the device, an output dx of
// x's size, one of [cols] (dCol) and a scratch of rows float64s.
type nnCase[F float32 | float64] struct {
	d                                  DType
	rows, cols, n                      int
	R                                  int64
	x, dy, b, tgt                      []F
	dx, dX, dDY, dB, dT, dCol, scratch cuDevBuf
}

func nnSetup[F float32 | float64](t *testing.T, d DType, rows, cols int) nnCase[F] {
	rng := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
	n := rows * cols
	size := int64(4)
	if d == F64 {
		size = 8
	}
	x := nnConv[F](trRand(rng, n, 2))
	dy := nnConv[F](trRand(rng, n, 1))
	b := nnConv[F](trRand(rng, cols, 1))
	tgt := make([]F, n)
	for r := 0; r < rows; r++ {
		tgt[r*cols+rng.IntN(cols)] = 1
	}
	dx, dX, dDY, dB, dT := cuAlloc(t, size*int64(n)), cuUpload(t, x), cuUpload(t, dy), cuUpload(t, b), cuUpload(t, tgt)
	dCol := cuAlloc(t, size*int64(cols))
	scratch := cuAlloc(t, 8*int64(rows))
	R := int64(rows)
	return nnCase[F]{d, rows, cols, n, R, x, dy, b, tgt, dx, dX, dDY, dB, dT, dCol, scratch}
}

// nnExact fails unless got equals want bit for bit (a NaN matches a NaN).
func nnExact[F float32 | float64](t *testing.T, what string, got, want []F) {
	t.Helper()
	for i := range want {
		if got[i] != want[i] && !(got[i] != got[i] && want[i] != want[i]) {
			t.Fatalf("%s[%d] = %v, want %v", what, i, got[i], want[i])
		}
	}
}

// nnRun runs f on each shape of the layer kernels' GPU tests, in float32 (results within rel
// 2e-5 of the CPU where not bit for bit) and float64 (1e-12).
func nnRun(t *testing.T, f32 func(*testing.T, nnCase[float32], float64), f64 func(*testing.T, nnCase[float64], float64)) {
	for _, s := range [][2]int{{1, 3}, {7, 10}, {333, 10}, {128, 129}, {1000, 65}} {
		t.Run(fmt.Sprintf("f32 %dx%d", s[0], s[1]), func(t *testing.T) { f32(t, nnSetup[float32](t, F32, s[0], s[1]), 2e-5) })
		t.Run(fmt.Sprintf("f64 %dx%d", s[0], s[1]), func(t *testing.T) { f64(t, nnSetup[float64](t, F64, s[0], s[1]), 1e-12) })
	}
}

// The routing losses' GPU tests (balance_loss_, z_loss_ and bench_cuda_test.go): their shapes
// and data, and the checks they share.
type loCase struct {
	name       string
	T, K, E, B int
}

var loCases = []loCase{
	{"tiny", 8, 2, 4, 1},
	{"E1", 64, 1, 1, 1},
	{"partial chunk", 130, 3, 9, 1},
	{"seqs", 200, 2, 16, 2},
	{"lanes", 300, 3, 40, 10},
	{"wide E", 150, 4, 300, 3},
	{"qwen", 4096, 8, 128, 1},
	{"qwen seq", 4096, 8, 128, 8},
	{"mixtral", 4096, 2, 8, 4},
}

func loIDs(rng *rand.Rand, T, K, E int) []int32 {
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		p := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(p[k])
			if rng.IntN(11) == 0 {
				ids[t*K+k] = -1
			}
		}
	}
	return ids
}

func loRand(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = rng.NormFloat64() * scale
	}
	return v
}

func loF32(v []float64) []float32 {
	o := make([]float32, len(v))
	for i, x := range v {
		o[i] = float32(x)
	}
	return o
}

func loBits[F float32 | float64](t *testing.T, what string, got, want []F) {
	t.Helper()
	for i := range want {
		if math.Float64bits(float64(got[i])) != math.Float64bits(float64(want[i])) {
			t.Fatalf("%s[%d] = %v, want %v (bit for bit)", what, i, got[i], want[i])
		}
	}
}

// loDType is the kernels dtype of F.
func loDType[F float32 | float64]() DType {
	var z F
	if _, ok := any(z).(float32); ok {
		return F32
	}
	return F64
}

// statusHas reports whether err is a StatusError with bit set.
func statusHas(err error, bit int32) bool {
	var se StatusError
	return errors.As(err, &se) && int32(se)&bit != 0
}

// TestCUDASizesBeyondInt32: the launchers refuse a column count (or a table's rows, E, K)
// beyond a kernel's 32-bit int argument before they launch anything: it was truncated (an
// embedding table 2^32+1 wide ran as 1 column wide, reading far past the ids). The checks run
// before any pointer is used, so null ones do here.
func TestCUDASizesBeyondInt32(t *testing.T) {
	const wide = math.MaxInt32 + 1
	for _, c := range []struct {
		name string
		f    func() error
	}{
		{"Embedding cols", func() error { return testCUDA.Embedding(F32, 0, 0, 0, 2, 4, wide) }},
		{"Embedding rows", func() error { return testCUDA.Embedding(F32, 0, 0, 0, 2, wide, 4) }},
		{"EmbeddingBackward", func() error { return testCUDA.EmbeddingBackward(F32, 0, 0, 0, 2, wide, 4) }},
		{"BiasAdd", func() error { return testCUDA.BiasAdd(F32, 0, 0, 0, 2, wide) }},
		{"RowForward", func() error { return testCUDA.RowForward(F32, RowSoftmax, 0, 0, 2, wide) }},
		{"ScaleRows", func() error { return testCUDA.ScaleRows(F32, 0, 0, 0, 2, wide) }},
		{"RowDot", func() error { return testCUDA.RowDot(F32, 0, 0, 0, 2, wide) }},
		{"GatherTopK", func() error { return testCUDA.GatherTopK(F32, 0, 0, 0, 2, wide, 2) }},
		{"GatherTopK gradient", func() error { return testCUDA.GatherTopKBackward(F32, 0, 0, 0, 2, wide, 2) }},
	} {
		if err := c.f(); err == nil || !strings.Contains(err.Error(), "more than a kernel's 32-bit count") {
			t.Errorf("%s with a size of 2^31: %v, want the 32-bit count error", c.name, err)
		}
	}
	cuMust(t, testCUDA.Status()) // nothing ran that could flag anything
}
