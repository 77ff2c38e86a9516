//go:build gomoecuda

package nccl

/*
#cgo LDFLAGS: -lnccl -lcudart
#include <stdlib.h>
#include <string.h>
#include <nccl.h>
#include <cuda_runtime.h>

static ncclResult_t epInitRank(ncclComm_t* comm, int nranks, const char* id, int rank) {
	ncclUniqueId u;
	memcpy(u.internal, id, NCCL_UNIQUE_ID_BYTES);
	return ncclCommInitRank(comm, nranks, u, rank);
}
*/
import "C"

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/ep/internal/ncclknob"
	"github.com/gomoe/gomoe/kernels"
)

// Comm is an ep.Communicator over NVIDIA's NCCL library for one GPU. Its AllToAll is one group of
// ncclSend/ncclRecv calls on the communicator's stream with one message per peer and direction:
// where a peer's blocks are not contiguous in the buffer (the expert-major side of an
// expert-parallel exchange) the message goes through staging memory that the communicator
// keeps, with one device-to-device copy per block (merged where contiguous) between the
// buffer and the staging; the blocks a rank sends itself are device-to-device copies, merged
// where they are contiguous on both sides (one copy for a whole dispatch with one rank). The
// copies run on a second stream, forked from and joined back into the communicator's stream,
// so that the self copies overlap the NCCL kernel. ExchangeCounts is
// the same for the small counts vector, followed by a copy to the host and a stream
// synchronisation: the one host sync of an expert-parallel step, which the sizes of the
// ncclSend/ncclRecv calls need.
//
// Device buffers (ep.Buffer.Device) are exchanged directly. Host buffers are staged through
// temporary device memory, which is slow but lets the CPU tests of the ops run over NCCL.
//
// Ranks: one goroutine per GPU in one process (NewGroup), or one process per GPU, on one
// node or many (NewID on rank 0, shared out of band, then New on every rank). Every
// method locks its goroutine to its OS thread and makes the communicator's device current.
//
// NVLink SHARP (multicast) is never used: the package sets NCCL_NVLS_ENABLE=0 before the
// first communicator is made, unless the environment already sets it.
type Comm struct {
	mu     sync.Mutex
	comm   C.ncclComm_t
	stream C.cudaStream_t
	own    bool // the stream is ours to destroy
	id     ID   // the group's id (GroupKey)
	rank   int
	size   int
	device int
	closed bool // Close was called (under mu)
	// aborted is set by Abort (or Close): the NCCL communicator is gone.
	aborted atomic.Bool
	// counts is a device buffer of countsCap bytes for ExchangeCounts.
	counts    unsafe.Pointer
	countsCap C.size_t
	// stage is the staging memory of AllToAll (stageCap bytes, kept and grown as needed):
	// where a peer's blocks are not contiguous in the caller's buffer, its one message per
	// chunk is gathered there before the send or scattered from there after the receive.
	stage    unsafe.Pointer
	stageCap C.size_t
	// side is a second stream of the device, forked from and joined back into stream by the
	// events in events, for the copies that run beside the NCCL kernels (self blocks, staging).
	side   C.cudaStream_t
	events []C.cudaEvent_t
	// descBuf is the block-copy descriptors' host slice, reused by every exchange.
	descBuf []int64
	// chunks is the number of NCCL groups an exchange is cut into, so that the staging copies
	// of one overlap the transfers of the next (see planExchange).
	chunks int
	// kern is gomoe's kernels in the device's primary context, for the block copies of the
	// staging (loaded on first use; kernFailed: loading failed, copies are used instead).
	kern       *kernels.CUDA
	kernFailed bool
	kernDev    cu.Device // whose primary context kern retained
	// slots are the pinned and device buffers of the block copies' descriptors, used in turn.
	slots [descSlots]descSlot
	slot  int
}

var _ ep.Communicator = (*Comm)(nil)

// ID is an ncclUniqueId: rank 0 makes it with NewID and sends it to the other ranks.
type ID [C.NCCL_UNIQUE_ID_BYTES]byte

func ncclErr(what string, r C.ncclResult_t) error {
	if r == C.ncclSuccess {
		return nil
	}
	return fmt.Errorf("ep: nccl: %s: %s (%d)", what, C.GoString(C.ncclGetErrorString(r)), int(r))
}

func cudaErr(what string, r C.cudaError_t) error {
	if r == C.cudaSuccess {
		return nil
	}
	return fmt.Errorf("ep: cuda: %s: %s (%d)", what, C.GoString(C.cudaGetErrorString(r)), int(r))
}

var nvlsOnce sync.Once

// disableNVLS keeps NCCL off NVLink multicast (NVLS), before any communicator exists.
func disableNVLS() {
	nvlsOnce.Do(func() {
		if _, ok := os.LookupEnv("NCCL_NVLS_ENABLE"); !ok {
			os.Setenv("NCCL_NVLS_ENABLE", "0")
		}
	})
}

// NewID makes a new unique id for a communicator (on rank 0).
func NewID() (ID, error) {
	disableNVLS()
	var u C.ncclUniqueId
	if err := ncclErr("ncclGetUniqueId", C.ncclGetUniqueId(&u)); err != nil {
		return ID{}, err
	}
	var id ID
	copy(id[:], C.GoBytes(unsafe.Pointer(&u.internal[0]), C.NCCL_UNIQUE_ID_BYTES))
	return id, nil
}

// New joins rank rank of a communicator of size ranks on GPU device. Every rank must call
// it at the same time with the same id (ncclCommInitRank blocks until all have joined).
func New(id ID, rank, size, device int) (*Comm, error) {
	if size < 1 || rank < 0 || rank >= size {
		return nil, fmt.Errorf("ep: nccl: rank %d of %d ranks", rank, size)
	}
	disableNVLS()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cudaErr("cudaSetDevice", C.cudaSetDevice(C.int(device))); err != nil {
		return nil, err
	}
	c := &Comm{id: id, rank: rank, size: size, device: device, own: true, chunks: ncclknob.ExchangeChunks}
	// A blocking stream: ordered with the legacy default stream, where package device's
	// engine launches its kernels.
	if err := cudaErr("cudaStreamCreate", C.cudaStreamCreate(&c.stream)); err != nil {
		return nil, err
	}
	cid := C.CBytes(id[:])
	defer C.free(cid)
	if err := ncclErr("ncclCommInitRank", C.epInitRank(&c.comm, C.int(size), (*C.char)(cid), C.int(rank))); err != nil {
		C.cudaStreamDestroy(c.stream)
		return nil, err
	}
	return c, nil
}

// NewGroup makes a communicator over the given GPUs of this process, rank i on
// devices[i], for one goroutine per GPU.
func NewGroup(devices []int) ([]*Comm, error) {
	id, err := NewID()
	if err != nil {
		return nil, err
	}
	n := len(devices)
	comms := make([]*Comm, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range devices {
		wg.Add(1)
		go func(r int) {
			defer wg.Done()
			comms[r], errs[r] = New(id, r, n, devices[r])
		}(r)
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			for _, c := range comms {
				if c != nil {
					c.Abort(err)
				}
			}
			return nil, fmt.Errorf("rank %d: %w", r, err)
		}
	}
	return comms, nil
}

// DeviceCount is the number of visible CUDA devices.
func DeviceCount() (int, error) {
	var n C.int
	if err := cudaErr("cudaGetDeviceCount", C.cudaGetDeviceCount(&n)); err != nil {
		return 0, err
	}
	return int(n), nil
}

// Rank is this rank's index in [0, Size()).
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// GroupKey is the communicator's ID, the same on every rank of its group (ep.GroupKeyer: a
// graph that holds another rank's plan of this group is refused when it is built).
func (c *Comm) GroupKey() any { return c.id }

// Device is the ordinal of the communicator's GPU.
func (c *Comm) Device() int { return c.device }

// String names the communicator, its rank and GPU.
func (c *Comm) String() string {
	return fmt.Sprintf("nccl.Comm(%p)[rank %d of %d, GPU %d]", c, c.rank, c.size, c.device)
}

// SetStream makes the communicator enqueue its work on stream s (a cudaStream_t of its
// device, for example a compute stream other than the default one) instead of its own blocking
// stream. The caller keeps ownership of s.
func (c *Comm) SetStream(s unsafe.Pointer) {
	c.mu.Lock()
	defer c.mu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.cudaSetDevice(C.int(c.device))
	// The staging memory may still be in use by work on the old stream.
	C.cudaStreamSynchronize(c.stream)
	if c.own {
		C.cudaStreamDestroy(c.stream)
	}
	c.stream, c.own = C.cudaStream_t(s), false
}

// Stream is the stream the communicator enqueues on.
func (c *Comm) Stream() unsafe.Pointer { return unsafe.Pointer(c.stream) }

// enter locks the OS thread, makes the device current and checks the communicator is open.
func (c *Comm) enter() (func(), error) {
	c.mu.Lock()
	runtime.LockOSThread()
	done := func() { runtime.UnlockOSThread(); c.mu.Unlock() }
	if c.closed || c.aborted.Load() {
		done()
		return nil, fmt.Errorf("%w: %s is closed or aborted", ep.ErrAborted, c)
	}
	if err := cudaErr("cudaSetDevice", C.cudaSetDevice(C.int(c.device))); err != nil {
		done()
		return nil, err
	}
	return done, nil
}

// Abort aborts the NCCL communicator (ncclCommAbort) and may be called from any goroutine,
// also while another one is blocked in a collective of this communicator: that call then
// returns, and later calls fail with ep.ErrAborted. NCCL ranks in other processes learn of it only
// through their own failures or timeouts, so every rank must abort on error. Close still
// releases the stream and buffers afterwards.
func (c *Comm) Abort(err error) {
	if !c.aborted.CompareAndSwap(false, true) {
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.cudaSetDevice(C.int(c.device))
	C.ncclCommAbort(c.comm)
}

// Close destroys the communicator (unless it was aborted) and releases its stream and buffers.
func (c *Comm) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.cudaSetDevice(C.int(c.device))
	var err error
	if c.aborted.CompareAndSwap(false, true) {
		err = ncclErr("ncclCommDestroy", C.ncclCommDestroy(c.comm))
	}
	if c.own {
		C.cudaStreamDestroy(c.stream)
	}
	if c.counts != nil {
		C.cudaFree(c.counts)
		c.counts = nil
	}
	c.closeStaging()
	return err
}

// Sync waits for the work the communicator enqueued (for benchmarks and host reads).
func (c *Comm) Sync() error {
	done, err := c.enter()
	if err != nil {
		return err
	}
	defer done()
	return c.sync()
}

func (c *Comm) sync() error {
	return cudaErr("cudaStreamSynchronize", C.cudaStreamSynchronize(c.stream))
}

// ExchangeCounts implements ep.Communicator: H2D, a grouped send/recv of len(send)/N int32 per
// peer, D2H and a stream synchronisation. Any error aborts the communicator (the other ranks
// would otherwise wait in this collective for this rank), and so does an Abort from another
// goroutine during the exchange: then it returns an error wrapping ep.ErrAborted, never counts
// that an aborted NCCL kernel left half written.
func (c *Comm) ExchangeCounts(send []int32) ([]int32, error) {
	recv, err := c.exchangeCounts(send)
	if err == nil && c.aborted.Load() {
		err = fmt.Errorf("%w: %s was aborted during ExchangeCounts", ep.ErrAborted, c)
	}
	if err != nil {
		c.Abort(err)
		return nil, err
	}
	return recv, nil
}

func (c *Comm) exchangeCounts(send []int32) ([]int32, error) {
	done, err := c.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	if len(send) == 0 || len(send)%c.size != 0 {
		return nil, fmt.Errorf("ep: nccl: ExchangeCounts: %d counts, want a positive multiple of the %d ranks", len(send), c.size)
	}
	m := len(send) / c.size
	bytes := C.size_t(4 * len(send))
	if c.countsCap < 2*bytes { // a small device buffer kept for the next exchange
		if c.counts != nil {
			C.cudaFree(c.counts)
			c.counts, c.countsCap = nil, 0
		}
		if err := cudaErr("cudaMalloc", C.cudaMalloc(&c.counts, 2*bytes)); err != nil {
			return nil, err
		}
		c.countsCap = 2 * bytes
	}
	sd, rd := c.counts, unsafe.Add(c.counts, int(bytes))
	if err := cudaErr("cudaMemcpyAsync", C.cudaMemcpyAsync(sd, unsafe.Pointer(&send[0]), bytes, C.cudaMemcpyHostToDevice, c.stream)); err != nil {
		return nil, err
	}
	if err := ncclErr("ncclGroupStart", C.ncclGroupStart()); err != nil {
		return nil, err
	}
	for j := 0; j < c.size; j++ {
		if r := C.ncclSend(unsafe.Add(sd, 4*j*m), C.size_t(m), C.ncclInt32, C.int(j), c.comm, c.stream); r != C.ncclSuccess {
			C.ncclGroupEnd()
			return nil, ncclErr("ncclSend", r)
		}
		if r := C.ncclRecv(unsafe.Add(rd, 4*j*m), C.size_t(m), C.ncclInt32, C.int(j), c.comm, c.stream); r != C.ncclSuccess {
			C.ncclGroupEnd()
			return nil, ncclErr("ncclRecv", r)
		}
	}
	if err := ncclErr("ncclGroupEnd", C.ncclGroupEnd()); err != nil {
		return nil, err
	}
	recv := make([]int32, len(send))
	if err := cudaErr("cudaMemcpyAsync", C.cudaMemcpyAsync(unsafe.Pointer(&recv[0]), rd, bytes, C.cudaMemcpyDeviceToHost, c.stream)); err != nil {
		return nil, err
	}
	return recv, c.sync()
}

// AllToAll implements ep.Communicator: one ncclSend and one ncclRecv per peer with rows to move,
// in one NCCL group (see planExchange for the chunks). Where a peer's blocks are contiguous in
// the buffer the message is that run; otherwise it goes through the communicator's staging
// memory: the blocks are gathered there with device-to-device copies (merged where contiguous)
// before the send, or scattered from there after the receive. The blocks a rank sends itself
// are device-to-device copies, merged where contiguous on both sides, on a second stream
// beside the NCCL kernel, as are the staging copies. For device buffers it returns once the
// work is enqueued, without waiting: the stream is ordered with the device's default stream
// (or is the stream given to SetStream), so kernels enqueued later see the rows. Host buffers
// are staged and waited for. NCCL does not check that the lengths of matching messages agree:
// they come from the counts exchange, and a mismatch is undefined behaviour (the in-process
// Group checks it). Any error aborts the communicator, as in ExchangeCounts; an exchange of
// host buffers that an Abort interrupted returns an error wrapping ep.ErrAborted.
func (c *Comm) AllToAll(send, recv ep.Buffer, sends, recvs [][]ep.Block) error {
	err := c.allToAll(send, recv, sends, recvs)
	if err == nil && c.aborted.Load() {
		err = fmt.Errorf("%w: %s was aborted during AllToAll", ep.ErrAborted, c)
	}
	if err != nil {
		c.Abort(err)
	}
	return err
}

func (c *Comm) allToAll(send, recv ep.Buffer, sends, recvs [][]ep.Block) error {
	if err := send.Check("send"); err != nil {
		return err
	}
	if err := recv.Check("receive"); err != nil {
		return err
	}
	if send.Dtype != recv.Dtype || send.Width != recv.Width {
		return fmt.Errorf("ep: nccl: AllToAll: send is %v×%d but receive is %v×%d", send.Dtype, send.Width, recv.Dtype, recv.Width)
	}
	if err := ep.CheckDisjoint("nccl: AllToAll", send, recv); err != nil {
		return err
	}
	if err := ep.CheckBlocks("sends", sends, c.size, send.Rows); err != nil {
		return err
	}
	if err := ep.CheckBlocks("receives", recvs, c.size, recv.Rows); err != nil {
		return err
	}
	x, err := planExchange(c.rank, sends, recvs, c.chunks)
	if err != nil {
		return err
	}
	done, err := c.enter()
	if err != nil {
		return err
	}
	defer done()
	row := int(send.Dtype.Type.Size()) * send.Width // bytes per row
	sp, rp := devPtr(send.Device), devPtr(recv.Device)
	var stage []unsafe.Pointer
	defer func() {
		for _, p := range stage {
			C.cudaFree(p)
		}
	}()
	toDevice := func(b ep.Buffer) (unsafe.Pointer, error) {
		n := C.size_t(b.Rows * row)
		var d unsafe.Pointer
		if n == 0 {
			return nil, nil
		}
		if err := cudaErr("cudaMalloc", C.cudaMalloc(&d, n)); err != nil {
			return nil, err
		}
		stage = append(stage, d)
		return d, cudaErr("cudaMemcpy", C.cudaMemcpyAsync(d, hostPtr(b.Host), n, C.cudaMemcpyHostToDevice, c.stream))
	}
	if send.Host != nil {
		if sp, err = toDevice(send); err != nil {
			return err
		}
	}
	if recv.Host != nil {
		if rp, err = toDevice(recv); err != nil {
			return err
		}
	}
	if err := c.exchange(x, sp, rp, row); err != nil {
		return err
	}
	if recv.Host != nil && recv.Rows > 0 {
		if err := cudaErr("cudaMemcpy", C.cudaMemcpyAsync(hostPtr(recv.Host), rp, C.size_t(recv.Rows*row), C.cudaMemcpyDeviceToHost, c.stream)); err != nil {
			return err
		}
	}
	if send.Host != nil || recv.Host != nil {
		return c.sync()
	}
	return nil
}

// devPtr turns a device address into a pointer for the C API. Device memory is not Go memory,
// so the garbage collector ignores it.
func devPtr(u uintptr) unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&u)) }

// hostPtr is the address of a checked host buffer's first element.
func hostPtr(h any) unsafe.Pointer {
	switch s := h.(type) {
	case []float32:
		return unsafe.Pointer(&s[0])
	case []float64:
		return unsafe.Pointer(&s[0])
	case []int32:
		return unsafe.Pointer(&s[0])
	}
	return nil
}

// DeviceBuffer is device memory for benchmarks and tests: Rows×Width elements of dtype dt.
type DeviceBuffer struct {
	ep.Buffer
	device int
}

// NewDeviceBuffer allocates a zeroed device buffer on the communicator's GPU.
func (c *Comm) NewDeviceBuffer(b ep.Buffer) (*DeviceBuffer, error) {
	done, err := c.enter()
	if err != nil {
		return nil, err
	}
	defer done()
	n := C.size_t(b.Rows * b.Width * int(b.Dtype.Type.Size()))
	var d unsafe.Pointer
	if n > 0 {
		if err := cudaErr("cudaMalloc", C.cudaMalloc(&d, n)); err != nil {
			return nil, err
		}
		if err := cudaErr("cudaMemset", C.cudaMemset(d, 0, n)); err != nil {
			C.cudaFree(d)
			return nil, err
		}
	}
	b.Host, b.Device = nil, uintptr(d)
	return &DeviceBuffer{Buffer: b, device: c.device}, nil
}

// Free releases a device buffer.
func (b *DeviceBuffer) Free() {
	if b.Device != 0 {
		runtime.LockOSThread()
		C.cudaSetDevice(C.int(b.device))
		C.cudaFree(devPtr(b.Device))
		runtime.UnlockOSThread()
		b.Device = 0
	}
}

// Upload copies host data (len Rows·Width of the buffer's element type) to the device buffer.
func (b *DeviceBuffer) Upload(host any) error {
	return b.copy(host, C.cudaMemcpyHostToDevice)
}

// Download copies the device buffer to host (len Rows·Width of the buffer's element type).
func (b *DeviceBuffer) Download(host any) error {
	return b.copy(host, C.cudaMemcpyDeviceToHost)
}

func (b *DeviceBuffer) copy(host any, kind C.enum_cudaMemcpyKind) error {
	h, err := ep.HostBuffer(host, b.Width)
	if err != nil {
		return err
	}
	if h.Rows != b.Rows || h.Dtype.Type.Size() != b.Dtype.Type.Size() {
		return fmt.Errorf("ep: device buffer copy: host has %d rows of %v, device %d rows of %v", h.Rows, h.Dtype, b.Rows, b.Dtype)
	}
	if b.Rows == 0 {
		return nil
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	C.cudaSetDevice(C.int(b.device))
	n := C.size_t(b.Rows * b.Width * int(b.Dtype.Type.Size()))
	dst, src := devPtr(b.Device), hostPtr(host)
	if kind == C.cudaMemcpyDeviceToHost {
		dst, src = src, dst
	}
	return cudaErr("cudaMemcpy", C.cudaMemcpy(dst, src, n, kind))
}
