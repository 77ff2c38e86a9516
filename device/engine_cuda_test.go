//go:build gomoecuda

package device_test

import (
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
)

func newEngine(t *testing.T) *device.Engine {
	t.Helper()
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func TestRoundTrip(t *testing.T) {
	e := newEngine(t)
	for _, h := range []*tensor.Dense{
		tensor.New(tensor.WithShape(3, 5), tensor.WithBacking([]float32{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14})),
		tensor.New(tensor.WithShape(2, 2), tensor.WithBacking([]float64{1.5, -2, math.Pi, 1e300})),
		tensor.New(tensor.WithShape(3), tensor.WithBacking([]int32{-1, 7, 1 << 30})),
		tensor.New(tensor.WithShape(2), tensor.WithBacking([]bfloat16.BFloat16{0x3f80, 0xc000})),
	} {
		d, err := e.CopyIn(h)
		if err != nil {
			t.Fatal(err)
		}
		if !e.Owns(d) || device.Lookup(d) != e {
			t.Fatalf("%v: device tensor not owned by the engine", h.Dtype())
		}
		if e.Owns(h) || device.Lookup(h) != nil {
			t.Fatalf("%v: host tensor reported as device", h.Dtype())
		}
		back, err := e.CopyOut(d)
		if err != nil {
			t.Fatal(err)
		}
		if !back.Shape().Eq(h.Shape()) || back.Dtype() != h.Dtype() {
			t.Fatalf("round trip gave %v %v, want %v %v", back.Dtype(), back.Shape(), h.Dtype(), h.Shape())
		}
		for i := 0; i < h.Shape().TotalSize(); i++ {
			if back.Get(i) != h.Get(i) {
				t.Fatalf("%v: element %d = %v, want %v", h.Dtype(), i, back.Get(i), h.Get(i))
			}
		}
		// Clone goes through the engine's Alloc and Memcpy (device to device).
		c := d.Clone().(*tensor.Dense)
		if !e.Owns(c) {
			t.Fatalf("%v: clone is not on the device", h.Dtype())
		}
		cb, err := e.CopyOut(c)
		if err != nil {
			t.Fatal(err)
		}
		if cb.Get(1) != h.Get(1) {
			t.Fatalf("%v: clone element 1 = %v, want %v", h.Dtype(), cb.Get(1), h.Get(1))
		}
		if err := e.Release(d); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNewTensorMemset(t *testing.T) {
	e := newEngine(t)
	d, err := e.NewTensor(tensor.Float32, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := e.CopyOut(d)
	for i, v := range h.Data().([]float32) {
		if v != 0 {
			t.Fatalf("NewTensor element %d = %g, want 0", i, v)
		}
	}
	if err := e.Memset(d, float32(2.5)); err != nil { // the engine's Memset (Dense.Memset writes host memory)
		t.Fatal(err)
	}
	h, _ = e.CopyOut(d)
	for i, v := range h.Data().([]float32) {
		if v != 2.5 {
			t.Fatalf("after Memset(2.5) element %d = %g", i, v)
		}
	}
	src := tensor.New(tensor.WithShape(4, 3), tensor.WithBacking(make([]float32, 12)))
	src.Data().([]float32)[7] = 9
	if err := e.Upload(d, src); err != nil {
		t.Fatal(err)
	}
	h, _ = e.CopyOut(d)
	if h.Data().([]float32)[7] != 9 || h.Data().([]float32)[6] != 0 {
		t.Fatalf("Upload did not copy: %v", h.Data())
	}
	if err := e.Upload(d, tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2}))); err == nil {
		t.Error("Upload of a smaller tensor: no error")
	}
	// Empty tensors hold no memory: never the engine's, and the engine makes none.
	empty := tensor.New(tensor.Of(tensor.Float32), tensor.WithShape(0, 4))
	if e.Owns(empty) || device.Lookup(empty) != nil {
		t.Error("an empty host tensor is reported as device memory")
	}
	if _, err := e.NewTensor(tensor.Float32, 0, 4); err == nil {
		t.Error("NewTensor with an empty dimension: no error")
	}
	// A shape whose bytes pass device.MaxAlloc is an error, and nothing is allocated: the
	// byte count wrapped around, to 4 (tensor.New then panicked, the block leaked) or to 0
	// (a tensor of no memory came back).
	live := e.Pool().Stats().LiveBlocks
	for _, shape := range [][]int{{1<<62 + 1}, {1 << 31, 1 << 31, 4}} {
		if d, err := e.NewTensor(tensor.Float32, shape...); err == nil || !strings.Contains(err.Error(), "needs more than") {
			t.Errorf("NewTensor(float32, %v): %v, %v; want an error", shape, d, err)
		}
	}
	// A dtype of no element size (its division by zero panicked).
	if d, err := e.NewTensor(tensor.Dtype{Type: reflect.TypeOf(struct{}{})}, 2); err == nil || !strings.Contains(err.Error(), "no element size") {
		t.Errorf("NewTensor of a dtype of size 0: %v, %v; want an error", d, err)
	}
	if n := e.Pool().Stats().LiveBlocks; n != live {
		t.Errorf("refused NewTensor calls left %d blocks, want %d", n, live)
	}
}

func TestAdd(t *testing.T) {
	e := newEngine(t)
	a := []float32{1, 2, 0.1, -3, 1e-8}
	b := []float32{0.5, -2, 0.2, 4, 1}
	inc := []float32{10, 10, 10, 10, 10}
	da, _ := e.CopyIn(tensor.New(tensor.WithShape(5), tensor.WithBacking(a)))
	db, _ := e.CopyIn(tensor.New(tensor.WithShape(5), tensor.WithBacking(b)))
	di, _ := e.CopyIn(tensor.New(tensor.WithShape(5), tensor.WithBacking(inc)))
	sum, err := tensor.Add(da, db) // dispatches to the engine's Adder
	if err != nil {
		t.Fatal(err)
	}
	if !e.Owns(sum) {
		t.Fatal("sum is not on the device")
	}
	h, _ := e.CopyOut(sum)
	for i, v := range h.Data().([]float32) {
		if v != a[i]+b[i] {
			t.Errorf("sum[%d] = %g, want %g", i, v, a[i]+b[i])
		}
	}
	if _, err := tensor.Add(da, db, tensor.WithIncr(di)); err != nil {
		t.Fatal(err)
	}
	h, _ = e.CopyOut(di)
	for i, v := range h.Data().([]float32) {
		if want := inc[i] + (a[i] + b[i]); v != want {
			t.Errorf("incr[%d] = %g, want %g", i, v, want)
		}
	}
	if _, err := tensor.Add(da, db, tensor.UseUnsafe()); err != nil {
		t.Fatal(err)
	}
	h, _ = e.CopyOut(da)
	for i, v := range h.Data().([]float32) {
		if v != a[i]+b[i] {
			t.Errorf("unsafe add [%d] = %g, want %g", i, v, a[i]+b[i])
		}
	}
	// bfloat16 adds in float32 and rounds once.
	ba := []bfloat16.BFloat16{bfloat16.FromFloat32(1), bfloat16.FromFloat32(3.5)}
	bb := []bfloat16.BFloat16{bfloat16.FromFloat32(1.0 / 256), bfloat16.FromFloat32(-0.25)}
	dba, _ := e.CopyIn(tensor.New(tensor.WithShape(2), tensor.WithBacking(ba)))
	dbb, _ := e.CopyIn(tensor.New(tensor.WithShape(2), tensor.WithBacking(bb)))
	bs, err := e.Add(dba, dbb)
	if err != nil {
		t.Fatal(err)
	}
	h, _ = e.CopyOut(bs)
	for i, v := range h.Data().([]bfloat16.BFloat16) {
		if want := bfloat16.FromFloat32(ba[i].Float32() + bb[i].Float32()); v != want {
			t.Errorf("bf16 sum[%d] = %v, want %v", i, v, want)
		}
	}
	host := tensor.New(tensor.WithShape(5), tensor.WithBacking(b))
	if _, err := e.Add(da, host); err == nil {
		t.Error("Add with a host operand: no error")
	}
	if _, err := e.Add(da, dba); err == nil {
		t.Error("Add of mismatched tensors: no error")
	}
	// A scalar given as a nil *tensor.Dense is an error, not a panic.
	if _, err := e.AddScalar(da, (*tensor.Dense)(nil), true); err == nil {
		t.Error("AddScalar with a nil *tensor.Dense scalar: no error")
	}
	one := tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{1}))
	s1, err := e.AddScalar(da, one, true)
	if err != nil {
		t.Fatal(err)
	}
	h, _ = e.CopyOut(s1)
	for i, v := range h.Data().([]float32) {
		if want := (a[i] + b[i]) + 1; v != want {
			t.Errorf("AddScalar [%d] = %g, want %g", i, v, want)
		}
	}
}

func TestStepMemoryFlat(t *testing.T) {
	e := newEngine(t)
	w, _ := e.NewTensor(tensor.Float32, 256)
	var first int
	for step := 0; step < 1000; step++ {
		for i := 1; i <= 4; i++ {
			if _, err := e.NewStepTensor(tensor.Float32, 1000*i); err != nil {
				t.Fatal(err)
			}
		}
		e.EndStep()
		if step == 0 {
			first = e.Pool().Stats().BackendAlloc
		}
	}
	if got := e.Pool().Stats().BackendAlloc; got != first {
		t.Errorf("backend allocations grew from %d after step 1 to %d after 1000 steps", first, got)
	}
	if !e.Owns(w) {
		t.Error("a persistent tensor was recycled by EndStep")
	}
}

func TestOutOfMemory(t *testing.T) {
	e := newEngine(t)
	if _, err := e.NewTensor(tensor.Float32, 1<<40); err == nil {
		t.Fatal("allocating 4 TiB: no error")
	}
	// Still usable.
	d, err := e.CopyIn(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2})))
	if err != nil {
		t.Fatalf("engine unusable after an out-of-memory error: %v", err)
	}
	h, err := e.CopyOut(d)
	if err != nil || h.Data().([]float32)[1] != 2 {
		t.Fatalf("engine unusable after an out-of-memory error: %v %v", h, err)
	}
}

func TestClosed(t *testing.T) {
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.CopyIn(tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{1}))); !errors.Is(err, device.ErrClosed) {
		t.Errorf("CopyIn on a closed engine = %v, want ErrClosed", err)
	}
	if _, err := device.New(99); err == nil {
		t.Error("New(99): no error")
	}
}

// TestCopyNonContiguousViews: CopyOut and Upload refuse a non-contiguous view of a device
// tensor (a column slice, a transpose), as CopyIn refuses a host one. CopyOut used to return
// the bytes at the view's address under the view's shape (a transpose of [[0 1 2] [3 4 5]]
// came back as [[0 1] [2 3] [4 5]]), and Upload into a transpose filled it in the wrong order.
func TestCopyNonContiguousViews(t *testing.T) {
	e := newEngine(t)
	d, err := e.CopyIn(tensor.New(tensor.WithShape(2, 3), tensor.WithBacking([]float32{0, 1, 2, 3, 4, 5})))
	if err != nil {
		t.Fatal(err)
	}
	col, err := d.Slice(nil, tensor.S(1))
	if err != nil {
		t.Fatal(err)
	}
	tr := d.ShallowClone()
	if err := tr.T(); err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		name string
		t    *tensor.Dense
	}{{"column", col.(*tensor.Dense)}, {"transpose", tr}} {
		if h, err := e.CopyOut(v.t); err == nil {
			t.Errorf("CopyOut of a %s view: %v, no error", v.name, h.Data())
		}
		src := tensor.New(tensor.WithShape(v.t.Shape().Clone()...), tensor.Of(tensor.Float32))
		if err := e.Upload(v.t, src); err == nil {
			t.Errorf("Upload into a %s view: no error", v.name)
		}
	}
	h, err := e.CopyOut(d)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range h.Data().([]float32) {
		if x != float32(i) {
			t.Fatalf("element %d = %v after the refused copies, want %d", i, x, i)
		}
	}
}

// TestClosedEngineRefuses: after Close, Status, Sync, the engine's kernels and a replay of a
// graph the engine captured return errors, and a second Close of the kernels does nothing. They
// used to reach the driver: Status read (and, when not 0, cleared) the freed status word, a
// replay ran the captured kernels on freed memory, and a second kernels Close freed the status
// word again. With a second engine on the same GPU the context lives on, and that memory can
// be the second engine's tensors; the test checks that its tensor keeps its values.
func TestClosedEngineRefuses(t *testing.T) {
	live := newEngine(t) // keeps the primary context alive, as a second engine of a program does
	e, err := device.New(0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.CopyIn(tensor.New(tensor.WithShape(4), tensor.WithBacking([]float32{1, 2, 3, 4})))
	if err != nil {
		t.Fatal(err)
	}
	g, err := e.Capture(func() error {
		_, err := e.Add(a, a)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	want := make([]float32, 1<<16)
	for i := range want {
		want[i] = float32(i%251) + 1
	}
	w, err := live.CopyIn(tensor.New(tensor.WithShape(len(want)), tensor.WithBacking(want)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Status(); !errors.Is(err, device.ErrClosed) {
		t.Errorf("Status of a closed engine = %v, want ErrClosed", err)
	}
	if err := e.Sync(); !errors.Is(err, device.ErrClosed) {
		t.Errorf("Sync of a closed engine = %v, want ErrClosed", err)
	}
	if err := g.Replay(); err == nil {
		t.Error("Replay of a closed engine's graph: no error")
	}
	if err := e.Kernels().Sync(); err == nil {
		t.Error("Sync of a closed engine's kernels: no error")
	}
	if err := e.Kernels().Status(); err == nil {
		t.Error("Status of a closed engine's kernels: no error")
	}
	if err := e.Kernels().Close(); err != nil {
		t.Errorf("a second Close of the kernels: %v", err)
	}
	_ = g.Close()
	h, err := live.CopyOut(w)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range h.Data().([]float32) {
		if x != want[i] {
			t.Fatalf("the live engine's tensor: element %d = %v, want %v", i, x, want[i])
		}
	}
}

// TestOtherEngineMemory: the methods that take raw memory or host tensors tell the device
// memory of another engine (another GPU, or as here another engine on the same GPU) from host
// memory. Memcpy and Memclr used to read and write it from the host (a fault that ends the
// process), Accessible reported it as host memory, and CopyIn and Upload handed it to the
// driver as a host pointer. Now Memcpy, Accessible, CopyIn and Upload return errors, and
// Memclr clears it through its own engine.
func TestOtherEngineMemory(t *testing.T) {
	ea, eb := newEngine(t), newEngine(t)
	a, err := ea.CopyIn(tensor.New(tensor.WithShape(4), tensor.WithBacking([]float32{1, 2, 3, 4})))
	if err != nil {
		t.Fatal(err)
	}
	b, err := eb.NewTensor(tensor.Float32, 4)
	if err != nil {
		t.Fatal(err)
	}
	host := tensor.New(tensor.WithShape(4), tensor.Of(tensor.Float32))
	if _, err := eb.CopyIn(a); err == nil {
		t.Error("CopyIn of another engine's tensor: no error")
	}
	if err := eb.Upload(b, a); err == nil {
		t.Error("Upload from another engine's tensor: no error")
	}
	if err := eb.Memcpy(host, a); err == nil {
		t.Error("Memcpy from another engine's memory to the host: no error")
	}
	if err := eb.Memcpy(a, host); err == nil {
		t.Error("Memcpy from the host into another engine's memory: no error")
	}
	if err := eb.Memcpy(b, a); err == nil {
		t.Error("Memcpy between two engines: no error")
	}
	if _, err := eb.Accessible(a); err == nil {
		t.Error("Accessible of another engine's memory: no error")
	}
	h, err := ea.CopyOut(a)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range h.Data().([]float32) {
		if x != float32(i+1) {
			t.Fatalf("element %d = %v after the refused copies, want %d", i, x, i+1)
		}
	}
	eb.Memclr(a)
	if h, err = ea.CopyOut(a); err != nil {
		t.Fatal(err)
	}
	for i, x := range h.Data().([]float32) {
		if x != 0 {
			t.Fatalf("element %d = %v after Memclr through the other engine, want 0", i, x)
		}
	}
}

// TestEngineNilValues: a nil tensor.Memory, a (*tensor.Dense)(nil) and an empty
// new(tensor.Dense) given to the engine's methods are errors (Memclr and Free: nothing to do),
// not panics: CopyIn and Upload of a nil *tensor.Dense, CopyIn of an empty one (its zero dtype)
// and Memset, Memclr, Memcpy, Accessible and Free of nil memory used to panic.
func TestEngineNilValues(t *testing.T) {
	e := newEngine(t)
	b, err := e.NewTensor(tensor.Float32, 2)
	if err != nil {
		t.Fatal(err)
	}
	var nd *tensor.Dense
	calls := []struct {
		name string
		f    func() error
	}{
		{"CopyIn(nil *Dense)", func() error { _, err := e.CopyIn(nd); return err }},
		{"CopyIn(new(Dense))", func() error { _, err := e.CopyIn(new(tensor.Dense)); return err }},
		{"Upload(b, nil *Dense)", func() error { return e.Upload(b, nd) }},
		{"Upload(b, new(Dense))", func() error { return e.Upload(b, new(tensor.Dense)) }},
		{"Memset(nil)", func() error { return e.Memset(nil, float32(0)) }},
		{"Memset(nil *Dense)", func() error { return e.Memset(nd, float32(0)) }},
		{"Memcpy(nil, b)", func() error { return e.Memcpy(nil, b) }},
		{"Memcpy(b, nil *Dense)", func() error { return e.Memcpy(b, nd) }},
		{"Accessible(nil)", func() error { _, err := e.Accessible(nil); return err }},
		{"Accessible(nil *Dense)", func() error { _, err := e.Accessible(nd); return err }},
	}
	for _, c := range calls {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s panicked: %v", c.name, r)
				}
			}()
			if err := c.f(); err == nil {
				t.Errorf("%s: no error", c.name)
			}
		}()
	}
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("Memclr or Free of nil memory panicked: %v", r)
			}
		}()
		e.Memclr(nil)
		e.Memclr(nd)
		if err := e.Free(nd, 0); err != nil {
			t.Errorf("Free(nil *Dense): %v", err)
		}
	}()
}
