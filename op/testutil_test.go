package op

import (
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/reftest"
)

// Small helpers the op tests share: random inputs, tensors, comparisons, error checks.

func newRNG(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15)) }

// randFloats returns n values in [-1, 1).
func randFloats(rng *rand.Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 2*rng.Float64() - 1
	}
	return out
}

// randProbs returns T·K distinct values in (0.05, 1).
func randProbs(rng *rand.Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = 0.05 + 0.9*rng.Float64() + 1e-4*float64(i)/float64(n)
	}
	return out
}

// randIDs returns ids [T,K] with distinct experts per token and, with probability pNone, -1.
func randIDs(rng *rand.Rand, T, K, E int, pNone float64) []int32 {
	ids := make([]int32, T*K)
	for t := 0; t < T; t++ {
		perm := rng.Perm(E)
		for k := 0; k < K; k++ {
			ids[t*K+k] = int32(perm[k])
			if rng.Float64() < pNone {
				ids[t*K+k] = -1
			}
		}
	}
	return ids
}

// denseOf builds a tensor of dtype dt (float32 or float64) from float64 data.
func denseOf(dt tensor.Dtype, data []float64, shape ...int) *tensor.Dense {
	if dt == tensor.Float32 {
		f := make([]float32, len(data))
		for i, v := range data {
			f[i] = float32(v)
		}
		return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(f))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]float64(nil), data...)))
}

func int32Dense(data []int32, shape ...int) *tensor.Dense {
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(append([]int32(nil), data...)))
}

// toF64 flattens a float32 or float64 value (or scalar) to float64s.
func toF64(t testing.TB, v G.Value) []float64 {
	t.Helper()
	if v == nil {
		t.Fatalf("nil value")
	}
	switch d := v.Data().(type) {
	case []float64:
		return append([]float64(nil), d...)
	case []float32:
		out := make([]float64, len(d))
		for i, x := range d {
			out[i] = float64(x)
		}
		return out
	case float64:
		return []float64{d}
	case float32:
		return []float64{float64(d)}
	}
	t.Fatalf("value of type %T", v.Data())
	return nil
}

// maxRelDiff is max_i |a-b| / (1 + |b|), or +Inf when the lengths differ or a difference is
// NaN (a NaN result must fail "d > tol" as well as "d != 0", as reftest.MaxDiff does).
func maxRelDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		d := math.Abs(a[i]-b[i]) / (1 + math.Abs(b[i]))
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = math.Max(m, d)
	}
	return m
}

// preallocCase is an op, its inputs and the shape of its output, for UsePreallocDo tests.
type preallocCase struct {
	op  G.UsePreallocDoer
	in  []G.Value
	out []int
}

// checkPreallocDo runs c's op with Do and with UsePreallocDo into a buffer of stale data made
// by mk, and reports an error (prefixed by label) unless UsePreallocDo returns that buffer
// holding Do's bits. It returns the stale data.
func checkPreallocDo(t *testing.T, c preallocCase, label string, mk func(data []float64, shape ...int) *tensor.Dense) []float64 {
	t.Helper()
	want, err := c.op.(G.Op).Do(c.in...)
	if err != nil {
		t.Fatalf("%v: %v", c.op, err)
	}
	n := tensor.Shape(c.out).TotalSize()
	stale := make([]float64, n)
	for i := range stale {
		stale[i] = 1e3 + float64(i)
	}
	pre := mk(stale, c.out...)
	got, err := c.op.UsePreallocDo(pre, c.in...)
	if err != nil {
		t.Fatalf("%v: UsePreallocDo: %v", c.op, err)
	}
	if got != G.Value(pre) || !bitsEqual(got, want) {
		t.Errorf("%s: UsePreallocDo gave %v, Do %v", label, got, want)
	}
	return stale
}

// bitsEqual compares two values' data bitwise.
func bitsEqual(a, b G.Value) bool {
	switch x := a.Data().(type) {
	case []float32:
		y, ok := b.Data().([]float32)
		return ok && reftest.FirstBitDiff(x, y) < 0
	case []float64:
		y, ok := b.Data().([]float64)
		return ok && reftest.FirstBitDiff(x, y) < 0
	case float32:
		y, ok := b.Data().(float32)
		return ok && math.Float32bits(x) == math.Float32bits(y)
	case float64:
		y, ok := b.Data().(float64)
		return ok && math.Float64bits(x) == math.Float64bits(y)
	case []bfloat16.BFloat16:
		y, ok := b.Data().([]bfloat16.BFloat16)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	case []int32:
		y, ok := b.Data().([]int32)
		if !ok || len(x) != len(y) {
			return false
		}
		for i := range x {
			if x[i] != y[i] {
				return false
			}
		}
		return true
	}
	return false
}

// wantErr checks that err is not nil and mentions every fragment.
func wantErr(t *testing.T, what string, err error, frags ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one mentioning %q", what, frags)
		return
	}
	for _, f := range frags {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
}
