//go:build gomoecuda

package device

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"gorgonia.org/cu"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/kernels"
)

// Engine is a tensor.Engine whose tensors live in the memory of one GPU. Pass it to
// G.NewTapeMachine with G.WithEngine, and create every input and parameter on it (CopyIn,
// NewTensor): gomoe's ops then run their CUDA kernels and every value they make stays on the
// device. Nothing is copied between host and device unless CopyIn, CopyOut, Upload or Memcpy
// is called.
//
// Work is enqueued on the device's default stream and runs asynchronously; CopyOut, Sync and
// Status wait for it. The engine reports AllocAccessible() == true (as Gorgonia's own CUDA
// engine does), so host tensors handed to it keep their flags; its methods tell host and
// device memory apart by looking pointers up in its allocator.
type Engine struct {
	ordinal int
	dev     cu.Device
	ctx     cu.CUContext
	k       *kernels.CUDA
	pool    *Pool
	closed  atomic.Bool
}

var registry struct {
	sync.Mutex
	engines []*Engine
}

type cuAllocator struct{ k *kernels.CUDA }

func (b cuAllocator) Alloc(n int64) (uintptr, error) {
	var p cu.DevicePtr
	err := b.k.Do(func() error {
		var err error
		p, err = cu.MemAlloc(n)
		return err
	})
	return uintptr(p), err
}

func (b cuAllocator) Free(p uintptr) error {
	return b.k.Do(func() error { return cu.MemFree(cu.DevicePtr(p)) })
}

// New returns an engine on GPU ordinal (0 is the first), using the device's primary context.
func New(ordinal int) (*Engine, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("device: counting GPUs: %w", err)
	}
	if ordinal < 0 || ordinal >= n {
		return nil, fmt.Errorf("device: GPU %d does not exist (%d found)", ordinal, n)
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return nil, fmt.Errorf("device: GPU %d: %w", ordinal, err)
	}
	ctx, err := dev.RetainPrimaryCtx()
	if err != nil {
		return nil, fmt.Errorf("device: GPU %d context: %w", ordinal, err)
	}
	k, err := kernels.NewCUDA(ctx)
	if err != nil {
		return nil, err
	}
	e := &Engine{ordinal: ordinal, dev: dev, ctx: ctx, k: k}
	e.pool = NewPool(cuAllocator{k})
	registry.Lock()
	registry.engines = append(registry.engines, e)
	registry.Unlock()
	return e, nil
}

// Close frees all the engine's device memory and its kernels. Tensors on it become invalid.
func (e *Engine) Close() error {
	if e.closed.Swap(true) {
		return nil
	}
	registry.Lock()
	for i, x := range registry.engines {
		if x == e {
			registry.engines = append(registry.engines[:i], registry.engines[i+1:]...)
			break
		}
	}
	registry.Unlock()
	err := e.k.Sync()
	if err2 := e.pool.Close(); err == nil {
		err = err2
	}
	if err2 := e.k.Close(); err == nil {
		err = err2
	}
	if err2 := e.dev.ReleasePrimaryCtx(); err == nil {
		err = err2
	}
	return err
}

// ErrClosed is returned by a closed engine.
var ErrClosed = errors.New("device: engine is closed")

func (e *Engine) ok() error {
	if e.closed.Load() {
		return ErrClosed
	}
	return nil
}

// Kernels is the engine's loaded CUDA kernels.
func (e *Engine) Kernels() *kernels.CUDA { return e.k }

// Pool is the engine's caching allocator.
func (e *Engine) Pool() *Pool { return e.pool }

// String names the engine's GPU.
func (e *Engine) String() string {
	name, _ := e.dev.Name()
	return fmt.Sprintf("device.Engine(GPU %d: %s)", e.ordinal, name)
}

// Lookup returns the open engine whose memory holds t's data, or nil if t is not on any GPU
// engine.
func Lookup(t tensor.Tensor) *Engine {
	if t == nil {
		return nil
	}
	p, ok := addr(t)
	if !ok {
		return nil
	}
	registry.Lock()
	defer registry.Unlock()
	for _, e := range registry.engines {
		if _, _, ok := e.pool.Owns(p); ok {
			return e
		}
	}
	return nil
}

// addr is the address of t's data, or false for a non-dense or empty tensor (whose Uintptr
// would panic).
func addr(t tensor.Tensor) (uintptr, bool) {
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil || d.MemSize() == 0 {
		return 0, false
	}
	return d.Uintptr(), true
}

// Owns reports whether t's data lives in this engine's device memory.
func (e *Engine) Owns(t tensor.Tensor) bool {
	p, ok := addr(t)
	if !ok {
		return false
	}
	_, _, owned := e.pool.Owns(p)
	return owned
}

func (e *Engine) isDevice(p uintptr) bool {
	_, _, ok := e.pool.Owns(p)
	return ok
}

// otherEngine returns the open engine other than e whose device memory holds p, or nil. The
// methods that take raw memory use it to tell another GPU's memory (or another engine's on the
// same GPU) from host memory, which they would otherwise read and write from the host.
func (e *Engine) otherEngine(p uintptr) *Engine {
	registry.Lock()
	defer registry.Unlock()
	for _, x := range registry.engines {
		if x == e {
			continue
		}
		if _, _, ok := x.pool.Owns(p); ok {
			return x
		}
	}
	return nil
}

// dmem is a block of device memory as a tensor.Memory.
type dmem struct{ p, n uintptr }

func (m dmem) Uintptr() uintptr { return m.p }
func (m dmem) MemSize() uintptr { return m.n }

// nilMemory reports whether m is nil or a nil *tensor.Dense, whose methods would panic.
func nilMemory(m tensor.Memory) bool {
	if m == nil {
		return true
	}
	d, ok := m.(*tensor.Dense)
	return ok && d == nil
}

// ptr turns a host address into an unsafe.Pointer for the driver (host memory that Go
// allocated does not move: see the assume-no-moving-gc pin in go.mod).
func ptr(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

// ---- tensor.Engine ----

// AllocAccessible reports true: see the type's doc.
func (e *Engine) AllocAccessible() bool { return true }

// NonStdAlloc marks the engine as allocating its own memory (tensor.NonStdEngine).
func (e *Engine) NonStdAlloc() {}

// Alloc returns size bytes of step-scoped device memory (see EndStep).
func (e *Engine) Alloc(size int64) (tensor.Memory, error) {
	if err := e.ok(); err != nil {
		return nil, err
	}
	p, err := e.pool.Alloc(size, false)
	if err != nil {
		return nil, err
	}
	return dmem{p, uintptr(size)}, nil
}

// Free returns device memory to the engine's cache. Work already enqueued on the stream that
// uses it finishes first (the cache hands blocks out again only to later work on the same
// stream).
func (e *Engine) Free(mem tensor.Memory, size int64) error {
	if nilMemory(mem) || mem.MemSize() == 0 {
		return nil
	}
	return e.pool.Free(mem.Uintptr())
}

// Memset sets every element of device (or host) memory to val: float32, float64 (0 only on
// the device), bfloat16.BFloat16, int32, uint32, uint16, uint8 or bool.
func (e *Engine) Memset(mem tensor.Memory, val interface{}) error {
	if err := e.ok(); err != nil {
		return err
	}
	if nilMemory(mem) {
		return fmt.Errorf("device: Memset of nil memory")
	}
	if mem.MemSize() == 0 {
		return nil
	}
	p, n := mem.Uintptr(), int64(mem.MemSize())
	if !e.isDevice(p) {
		return fmt.Errorf("device: Memset on host memory %#x", p)
	}
	dp := cu.DevicePtr(p)
	return e.k.Do(func() error {
		k := e.k
		switch v := val.(type) {
		case float32:
			return k.Memset(dp, uint32FromF32(v), n/4, 4)
		case int32:
			return k.Memset(dp, uint32(v), n/4, 4)
		case uint32:
			return k.Memset(dp, v, n/4, 4)
		case float64:
			if v != 0 {
				return fmt.Errorf("device: Memset of float64 %g: only 0 is supported", v)
			}
			return k.Memset(dp, 0, n, 1)
		case bfloat16.BFloat16:
			return k.Memset(dp, uint32(v), n/2, 2)
		case uint16:
			return k.Memset(dp, uint32(v), n/2, 2)
		case uint8:
			return k.Memset(dp, uint32(v), n, 1)
		case bool:
			var b uint32
			if v {
				b = 1
			}
			return k.Memset(dp, b, n, 1)
		}
		return fmt.Errorf("device: Memset with a %T value", val)
	})
}

func uint32FromF32(f float32) uint32 { return *(*uint32)(unsafe.Pointer(&f)) }

// Memclr zeroes memory (device or host).
func (e *Engine) Memclr(mem tensor.Memory) {
	if nilMemory(mem) || mem.MemSize() == 0 || e.ok() != nil {
		return
	}
	p, n := mem.Uintptr(), int64(mem.MemSize())
	if !e.isDevice(p) {
		if o := e.otherEngine(p); o != nil {
			o.Memclr(mem) // device memory: clearing it from the host would fault
			return
		}
		clear(unsafe.Slice((*byte)(ptr(p)), n))
		return
	}
	_ = e.k.Do(func() error { return e.k.Memset(cu.DevicePtr(p), 0, n, 1) })
}

// Memcpy copies src into dst, each host or device memory (device to host waits for the
// device). It copies src.MemSize() bytes; dst must be at least that large.
func (e *Engine) Memcpy(dst, src tensor.Memory) error {
	if err := e.ok(); err != nil {
		return err
	}
	if nilMemory(dst) || nilMemory(src) {
		return fmt.Errorf("device: Memcpy with nil memory (dst %T, src %T)", dst, src)
	}
	n := int64(src.MemSize())
	if int64(dst.MemSize()) < n {
		return fmt.Errorf("device: Memcpy of %d bytes into %d", n, dst.MemSize())
	}
	if n == 0 {
		return nil
	}
	d, s := dst.Uintptr(), src.Uintptr()
	dd, sd := e.isDevice(d), e.isDevice(s)
	for _, m := range []struct {
		what string
		p    uintptr
		dev  bool
	}{{"destination", d, dd}, {"source", s, sd}} {
		if !m.dev {
			if o := e.otherEngine(m.p); o != nil {
				return fmt.Errorf("device: Memcpy %s %#x is device memory of another engine (%v), not of this one or the host: copy it out with that engine first", m.what, m.p, o)
			}
		}
	}
	if !dd && !sd {
		copy(unsafe.Slice((*byte)(ptr(d)), n), unsafe.Slice((*byte)(ptr(s)), n))
		return nil
	}
	return e.k.Do(func() error {
		switch {
		case dd && sd:
			return e.k.CopyDtoD(cu.DevicePtr(d), cu.DevicePtr(s), n)
		case dd:
			return e.k.CopyHtoD(cu.DevicePtr(d), ptr(s), n)
		default:
			return e.k.CopyDtoH(ptr(d), cu.DevicePtr(s), n)
		}
	})
}

// Accessible returns host memory as is and an error for device memory (copy it out with
// CopyOut instead).
func (e *Engine) Accessible(mem tensor.Memory) (tensor.Memory, error) {
	if nilMemory(mem) {
		return nil, fmt.Errorf("device: Accessible of nil memory")
	}
	if mem.MemSize() > 0 && (e.isDevice(mem.Uintptr()) || e.otherEngine(mem.Uintptr()) != nil) {
		return nil, fmt.Errorf("device: memory %#x is on the GPU; use CopyOut", mem.Uintptr())
	}
	return mem, nil
}

// WorksWith reports true: the engine's methods check layouts themselves.
func (e *Engine) WorksWith(order tensor.DataOrder) bool { return true }

// ---- tensors ----

// DType maps a tensor dtype to the kernels' data type: Float32, Float64 or bfloat16.
func DType(dt tensor.Dtype) (kernels.DType, error) {
	switch dt {
	case tensor.Float32:
		return kernels.F32, nil
	case tensor.Float64:
		return kernels.F64, nil
	case bfloat16.Dtype:
		return kernels.BF16, nil
	}
	return 0, fmt.Errorf("device: dtype %v is not float32, float64 or bfloat16", dt)
}

func (e *Engine) newTensor(dt tensor.Dtype, persistent bool, shape ...int) (*tensor.Dense, error) {
	if err := e.ok(); err != nil {
		return nil, err
	}
	n := int64(dt.Size())
	if n < 1 {
		return nil, fmt.Errorf("device: dtype %v has no element size", dt)
	}
	for _, s := range shape {
		if s < 1 {
			return nil, fmt.Errorf("device: shape %v has an empty dimension; device tensors hold at least one element", shape)
		}
		if int64(s) > MaxAlloc/n { // n·s would pass MaxAlloc, or wrap around to a small size
			return nil, fmt.Errorf("device: a %v tensor of shape %v needs more than %d bytes", dt, shape, int64(MaxAlloc))
		}
		n *= int64(s)
	}
	p, err := e.pool.Alloc(n, persistent)
	if err != nil {
		return nil, err
	}
	t := tensor.New(tensor.Of(dt), tensor.WithShape(shape...), tensor.WithEngine(e), tensor.FromMemory(p, uintptr(n)))
	return t, nil
}

// NewTensor returns a zeroed device tensor that persists until Release (for parameters and
// inputs).
func (e *Engine) NewTensor(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	t, err := e.newTensor(dt, true, shape...)
	if err != nil {
		return nil, err
	}
	if t.MemSize() > 0 {
		if err := e.k.Do(func() error { return e.k.Memset(cu.DevicePtr(t.Uintptr()), 0, int64(t.MemSize()), 1) }); err != nil {
			_ = e.pool.Free(t.Uintptr())
			return nil, err
		}
	}
	return t, nil
}

// NewStepTensor returns an uninitialised device tensor that lives until EndStep. Ops use it
// for their outputs.
func (e *Engine) NewStepTensor(dt tensor.Dtype, shape ...int) (*tensor.Dense, error) {
	return e.newTensor(dt, false, shape...)
}

func hostDense(t tensor.Tensor) (*tensor.Dense, error) {
	d, ok := t.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("device: %T is not a *tensor.Dense", t)
	}
	if d == nil || d.Dtype().Type == nil {
		return nil, fmt.Errorf("device: the host tensor is a nil or empty *tensor.Dense (no dtype, no data)")
	}
	if !d.IsNativelyAccessible() {
		return nil, fmt.Errorf("device: host tensor is not accessible")
	}
	if d.RequiresIterator() {
		return nil, fmt.Errorf("device: tensor is a non-contiguous view; materialize it first")
	}
	if o := Lookup(d); o != nil {
		return nil, fmt.Errorf("device: the source tensor is in the device memory of %v, not on the host: copy it out with that engine (CopyOut) first", o)
	}
	return d, nil
}

// CopyIn returns a device copy of the host tensor t that persists until Release.
func (e *Engine) CopyIn(t tensor.Tensor) (*tensor.Dense, error) {
	h, err := hostDense(t)
	if err != nil {
		return nil, err
	}
	if e.Owns(h) {
		return nil, fmt.Errorf("device: CopyIn of a tensor that is already on the device")
	}
	d, err := e.newTensor(h.Dtype(), true, h.Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	if err := e.Upload(d, h); err != nil {
		_ = e.pool.Free(d.Uintptr())
		return nil, err
	}
	return d, nil
}

// Upload copies the host tensor src into the device tensor dst of the same dtype and size
// (to refresh an input every step without allocating).
func (e *Engine) Upload(dst, src tensor.Tensor) error {
	h, err := hostDense(src)
	if err != nil {
		return err
	}
	d, ok := dst.(*tensor.Dense)
	if !ok || !e.Owns(d) {
		return fmt.Errorf("device: Upload destination is not a tensor on this engine")
	}
	if d.RequiresIterator() {
		return fmt.Errorf("device: Upload destination is a non-contiguous view (a slice or a transpose): the copy would fill its memory in the wrong order")
	}
	if d.Dtype() != h.Dtype() || d.MemSize() != h.MemSize() {
		return fmt.Errorf("device: Upload of %v %v into %v %v", h.Dtype(), h.Shape(), d.Dtype(), d.Shape())
	}
	if h.MemSize() == 0 {
		return nil
	}
	return e.k.Do(func() error {
		return e.k.CopyHtoD(cu.DevicePtr(d.Uintptr()), ptr(h.Uintptr()), int64(h.MemSize()))
	})
}

// CopyOut waits for the device and returns a host copy of the device tensor t. If a kernel
// flagged bad input since the last check (for example an expert id out of range), it returns
// the copy together with a kernels.StatusError.
func (e *Engine) CopyOut(t tensor.Tensor) (*tensor.Dense, error) {
	if err := e.ok(); err != nil {
		return nil, err
	}
	d, ok := t.(*tensor.Dense)
	if !ok || !e.Owns(d) {
		return nil, fmt.Errorf("device: CopyOut of a tensor that is not on this engine")
	}
	if d.RequiresIterator() {
		return nil, fmt.Errorf("device: CopyOut of a non-contiguous view (a slice or a transpose): its elements are not the bytes at its address; copy out the whole tensor")
	}
	h := tensor.New(tensor.Of(d.Dtype()), tensor.WithShape(d.Shape().Clone()...))
	if h.MemSize() > 0 {
		if err := e.k.Do(func() error {
			return e.k.CopyDtoH(ptr(h.Uintptr()), cu.DevicePtr(d.Uintptr()), int64(h.MemSize()))
		}); err != nil {
			return nil, err
		}
	}
	return h, e.k.Status()
}

// Release frees a device tensor (from NewTensor, CopyIn or an op) back to the cache.
func (e *Engine) Release(t tensor.Tensor) error {
	p, ok := addr(t)
	if !ok {
		return fmt.Errorf("device: Release of a %T that holds no device memory", t)
	}
	return e.pool.Free(p)
}

// Persist keeps an op's output (for example a plan reused across steps) past EndStep.
func (e *Engine) Persist(t tensor.Tensor) error {
	p, ok := addr(t)
	if !ok {
		return fmt.Errorf("device: Persist of a %T that holds no device memory", t)
	}
	start, _, ok := e.pool.Owns(p)
	if !ok {
		return fmt.Errorf("device: Persist of a tensor that is not on this engine")
	}
	return e.pool.SetPersistent(start, true)
}

// EndStep recycles the device memory of every value made since the last EndStep except
// persistent tensors. Values read after it may hold recycled data: copy out first.
func (e *Engine) EndStep() int { return e.pool.EndStep() }

// Sync waits for all enqueued device work.
func (e *Engine) Sync() error {
	if err := e.ok(); err != nil {
		return err
	}
	return e.k.Sync()
}

// Status waits for the device and returns what its kernels flagged since the last check.
func (e *Engine) Status() error {
	if err := e.ok(); err != nil {
		return err
	}
	return e.k.Status()
}
