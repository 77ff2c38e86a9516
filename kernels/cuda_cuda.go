//go:build gomoecuda

package kernels

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"gorgonia.org/cu"
)

// The CUDA engine: the embedded fatbin, the device dtypes and status bits, the CUDA type and its
// launch plumbing. The launchers of each kernel concept live in that concept's x_cuda.go file,
// next to its CUDA source x.cuh and its CPU twin x.go.

// kernelNames lists the kernels NewCUDA looks up in gomoe.fatbin; each launcher file adds its
// kernels' names in an init function.
var kernelNames []string

// gomoeFatbin is gomoe.fatbin (sm_80, sm_90a and compute_80 PTX), built by build_fatbin.sh.
//
//go:embed gomoe.fatbin
var gomoeFatbin string

// DType is the element type of device data.
type DType int

const (
	// F32 is float32 data with float32 probs.
	F32 DType = iota
	// F64 is float64 data with float64 probs.
	F64
	// BF16 is bfloat16 data with float32 probs, accumulated in float32.
	BF16
)

func (d DType) String() string {
	switch d {
	case F32:
		return "float32"
	case F64:
		return "float64"
	case BF16:
		return "bfloat16"
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Size is the element size in bytes.
func (d DType) Size() int {
	switch d {
	case F64:
		return 8
	case BF16:
		return 2
	}
	return 4
}

// ProbSize is the size in bytes of the probs that go with data of type d.
func (d DType) ProbSize() int {
	if d == F64 {
		return 8
	}
	return 4
}

func (d DType) suffix() string {
	switch d {
	case F32:
		return "f32"
	case F64:
		return "f64"
	}
	return "bf16"
}

func (d DType) valid() bool { return d == F32 || d == F64 || d == BF16 }

// Status bits written by the device kernels (see gomoe.cu; StatusNaNScore is in topk_cuda.go,
// StatusBadIndex in embedding_cuda.go, StatusBadPlan in gmm_sm90_cuda.go, StatusBadNorm in
// grad_norm_cuda.go, StatusBadRows in permute_cuda.go).
const (
	StatusBadID    = 1 // an expert id outside [-1, E)
	StatusRepeated = 2 // a token named one expert twice
	StatusNaNProb  = 4 // a NaN prob under drop-by-prob
)

// StatusError describes what the device kernels flagged since the last check.
type StatusError int32

func (s StatusError) Error() string {
	var parts []string
	if s&StatusBadID != 0 {
		parts = append(parts, "an expert id was outside [-1, E) (treated as -1)")
	}
	if s&StatusRepeated != 0 {
		parts = append(parts, "a token named the same expert twice")
	}
	if s&StatusNaNProb != 0 {
		parts = append(parts, "a prob was NaN under drop-by-prob (ranked lowest)")
	}
	if s&StatusNaNScore != 0 {
		parts = append(parts, "a top-k selection score was NaN (ranked lowest)")
	}
	if s&StatusBadIndex != 0 {
		parts = append(parts, "an embedding id was outside [0, V) (its row set to 0)")
	}
	if s&StatusBadPlan != 0 {
		parts = append(parts, "a grouped matmul's plan had an expert segment outside its rows (that expert skipped, its dW set to 0)")
	}
	if s&StatusBadNorm != 0 {
		parts = append(parts, "a clipped step's gradient norm was NaN or infinite (its update skipped)")
	}
	if s&StatusBadRows != 0 {
		parts = append(parts, "a permute or combine kernel's plan had a row or token id outside its buffers, a plan not made by BuildPlan (that slot taken as dropped)")
	}
	return "gomoe: device kernels: " + strings.Join(parts, "; ")
}

// CUDA is gomoe's kernels loaded into one CUDA context. Its methods take device pointers,
// enqueue the kernels on the context's default stream (a capture stream inside Capture, see
// stream_cuda.go) and return without waiting: nothing synchronises with the host except Sync,
// Status and the copies to the host. Each method locks its goroutine to its OS
// thread and makes the context current there for the duration of the call, so it may be called
// from any goroutine (the cost is one cuCtxSetCurrent per call, not a channel hop), and launches
// through one cgo call to cuLaunchKernel, or cuLaunchKernelEx for a programmatic launch, with no
// allocation (launch_cuda.go).
//
// The kernels check nothing that would need a host sync: the plan builder flags bad ids in a
// status word that Status reads. Pointers must be device memory of the documented sizes; a
// plan passed to the data kernels should come from BuildPlan: a hand-made one is kept inside
// the buffers (a row or token id out of range is taken as dropped and flagged, StatusBadRows;
// the grouped matmul flags a bad segment, StatusBadPlan), but ids in range that disagree give
// wrong values unflagged, so check it with Plan.Check on the host before copying it over.
type CUDA struct {
	ctx       cu.CUContext
	mod       cu.Module
	fn        map[string]cu.Function
	status    cu.DevicePtr
	stream    unsafe.Pointer // the kernels' CUstream: nil (legacy) except in Capture (stream_cuda.go)
	capStream unsafe.Pointer // Capture's stream, made on first use
	capMu     sync.Mutex     // one Capture at a time

	gmod      cu.Module // gomoe_gmm.fatbin (gmm_sm90_cuda.go)
	gmm90Once sync.Once
	g90       *gmm90 // sm_90a grouped GEMM state (gmm_sm90_cuda.go)

	gmmSimtOnce sync.Once
	gsimt       *gmmSimt // float32/float64 grouped GEMM state (gmm_simt_cuda.go)
	lastGMM     string   // the path of the last grouped matmul: "sm90", "simt" or "cublas" (tests)

	pdl     bool // eager launches use programmatic stream serialization (launch_cuda.go)
	wavesMu sync.Mutex
	waves   map[waveKey]int // blocks the GPU holds at once (launch_cuda.go), under wavesMu

	closed atomic.Bool // Close has run: every later call fails with errClosed
}

// errClosed is the error of a call on a closed CUDA: its status word, modules and tables are
// freed, and their device memory may belong to someone else by now.
var errClosed = errors.New("gomoe: the CUDA kernels are closed")

// NewCUDA loads the embedded fatbin into ctx.
func NewCUDA(ctx cu.CUContext) (*CUDA, error) {
	c := &CUDA{ctx: ctx, fn: map[string]cu.Function{}}
	err := c.do(func() error {
		mod, err := cu.LoadData(gomoeFatbin)
		if err != nil {
			return fmt.Errorf("gomoe: loading the CUDA kernels: %w", err)
		}
		c.mod = mod
		for _, n := range kernelNames {
			f, err := mod.Function(n)
			if err != nil {
				return fmt.Errorf("gomoe: CUDA kernel %s: %w", n, err)
			}
			c.fn[n] = f
		}
		if err := c.loadGMM(); err != nil {
			return err
		}
		c.pdl = programmaticLaunch && os.Getenv("GOMOE_NO_PDL") == "" && c.pdlCapable()
		if c.status, err = cu.MemAlloc(4); err != nil {
			return fmt.Errorf("gomoe: allocating the status word: %w", err)
		}
		return cu.MemsetD32(c.status, 0, 1)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close frees the cuBLAS handle, the grouped GEMM's tables, the status word and unloads the
// modules. Every later call (Close again: nothing) returns an error: it would launch unloaded
// kernels, or read, clear or free the freed status word, whose memory a later allocation in
// the same context may have taken.
func (c *CUDA) Close() error {
	if c.closed.Swap(true) {
		return nil
	}
	err := c.closeBLAS()
	if err2 := c.run(c.g90.close); err == nil {
		err = err2
	}
	if err2 := c.run(c.gsimt.close); err == nil {
		err = err2
	}
	if err2 := c.run(func() error {
		err := cu.MemFree(c.status)
		if err2 := c.mod.Unload(); err == nil {
			err = err2
		}
		if err2 := c.unloadGMM(); err == nil {
			err = err2
		}
		if err2 := c.destroyStream(); err == nil {
			err = err2
		}
		return err
	}); err == nil {
		err = err2
	}
	return err
}

// Context is the CUDA context the kernels live in.
func (c *CUDA) Context() cu.CUContext { return c.ctx }

// Do runs f on a goroutine locked to its OS thread with c's context current.
func (c *CUDA) Do(f func() error) error { return c.do(f) }

func (c *CUDA) do(f func() error) error {
	if c.closed.Load() {
		return errClosed
	}
	return c.run(f)
}

// run is do without the check that c is open (Close).
func (c *CUDA) run(f func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(c.ctx); err != nil {
		return fmt.Errorf("gomoe: making the CUDA context current: %w", err)
	}
	return f()
}

// Sync waits for all enqueued work.
func (c *CUDA) Sync() error { return c.do(cu.Synchronize) }

// Status waits for all enqueued work, then returns and clears what the kernels flagged
// (nil, or a StatusError).
func (c *CUDA) Status() error {
	var s int32
	err := c.do(func() error {
		if err := cu.Synchronize(); err != nil {
			return err
		}
		if err := c.CopyDtoH(unsafe.Pointer(&s), c.status, 4); err != nil {
			return err
		}
		if s != 0 {
			return c.Memset(c.status, 0, 1, 4)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if s != 0 {
		return StatusError(s)
	}
	return nil
}

// args packs kernel arguments into 8-byte slots (cu's Launch reads 8 bytes per argument; the
// kernel reads the low 4 bytes of an int: little-endian).
type args []uint64

func (a *args) p(v cu.DevicePtr) *args { *a = append(*a, uint64(v)); return a }

func (a *args) i(v int) *args { *a = append(*a, uint64(uint32(int32(v)))); return a }

func (a *args) l(v int64) *args { *a = append(*a, uint64(v)); return a }

func (a *args) d(v float64) *args { *a = append(*a, math.Float64bits(v)); return a }

// smemPad rounds a dynamic shared memory size up to 16 bytes and adds 16: nvcc may read a few
// bytes past the last element with one vector load (compute-sanitizer flagged a 12-byte read
// of an 8-byte array).
func smemPad(n int) int { return (n+15)&^15 + 16 }

// launch launches the kernel name on c's stream, a programmatic launch where eagerPDL allows.
func (c *CUDA) launch(name string, grid, block, smem int, a args) error {
	return c.launchWith(name, grid, block, smem, a, c.eagerPDL())
}

// launchWith is launch with the choice of a programmatic launch made by the caller.
func (c *CUDA) launchWith(name string, grid, block, smem int, a args, pdl bool) error {
	f, ok := c.fn[name]
	if !ok {
		return fmt.Errorf("gomoe: no CUDA kernel %s", name)
	}
	if grid < 1 {
		return nil
	}
	if grid > maxGrid {
		return fmt.Errorf("gomoe: launching %s: a grid of %d blocks, at most %d", name, grid, maxGrid)
	}
	return launchRaw(name, c.stream, f, grid, block, smemPad(smem), a, pdl)
}

// maxGrid is the largest grid (x dimension) a launch takes.
const maxGrid = 1<<31 - 1

// gridFor is the grid of a grid-stride kernel over n items: one thread per item, at most 2^20
// blocks (the kernel's loop takes the rest). A kernel without a grid-stride loop, which runs
// one thread (or one warp) per item and returns past the end, needs blocksFor or rowGrid:
// under gridFor's cap its items past 2^20 blocks would never be computed.
func gridFor(n int64, block int) int {
	g := (n + int64(block) - 1) / int64(block)
	if g > 1<<20 {
		g = 1 << 20
	}
	return int(g)
}

// blocksFor is the grid of a kernel without a grid-stride loop over n items, one thread each:
// every item gets its thread (launchWith refuses a grid beyond maxGrid).
func blocksFor(n int64, block int) int { return int((n + int64(block) - 1) / int64(block)) }

// ewiseGrid is the grid (of 256-thread blocks) of an element-wise kernel over n elements whose
// widest type has size bytes, moving 16 bytes of that type per thread (gomoe.cuh's ewise,
// ewiseN).
func ewiseGrid(n int64, size int) int {
	v := int64(16 / size)
	return gridFor((n+v-1)/v, 256)
}

// nnCheck checks the dtype (float32 or float64) and the matrix shape of an nn launcher.
func nnCheck(what string, d DType, rows int64, cols int) error {
	if d != F32 && d != F64 {
		return fmt.Errorf("gomoe: device %s: dtype %v, want float32 or float64", what, d)
	}
	if rows < 1 || cols < 1 {
		return fmt.Errorf("gomoe: device %s: shape (%d, %d)", what, rows, cols)
	}
	return colsFit(what, cols)
}

// colsFit refuses a column count (or another size a kernel takes as an int) beyond a kernel's
// 32-bit int argument, which args.i would truncate: a table 2^32+1 wide ran as 1 column wide,
// reading far past the ids.
func colsFit(what string, n ...int) error {
	for _, v := range n {
		if v > math.MaxInt32 {
			return fmt.Errorf("gomoe: device %s: a size of %d, more than a kernel's 32-bit count (%d)", what, v, math.MaxInt32)
		}
	}
	return nil
}

// rowGrid is the grid of a one-warp-per-row kernel with 256-thread blocks.
func rowGrid(rows int64) int { return int((rows*32 + 255) / 256) }

// vec reports whether rows of H elements of d can move as 16-byte packs: the row is a
// multiple of 16 bytes and every pointer is 16-byte aligned.
func vec(d DType, H int, ptrs ...cu.DevicePtr) bool {
	if H*d.Size()%16 != 0 {
		return false
	}
	for _, p := range ptrs {
		if p%16 != 0 {
			return false
		}
	}
	return true
}

func (c *CUDA) check(d DType, g Geometry, H int) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device kernels: unknown dtype %v", d)
	}
	if H < 1 {
		return fmt.Errorf("gomoe: device kernels: H=%d, want H >= 1", H)
	}
	return g.Validate()
}

func typedName(kind string, d DType, v bool) (string, int64) {
	n := kind + "_" + d.suffix() + "_s"
	if v {
		return kind + "_" + d.suffix() + "_v", int64(16 / d.Size())
	}
	return n, 1
}
