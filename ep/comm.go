package ep

import (
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"unsafe"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
)

// A Communicator connects the ranks of one expert-parallel group. Every method except Rank,
// Size and Abort is a collective: all Size() ranks must call it, in the same order, or it does
// not return (the in-process Group returns an error after its timeout; NCCL hangs until the
// communicator is aborted). An error on one rank that makes it skip a collective must be
// followed by Abort, so that the other ranks return instead of waiting: the ep ops abort on
// their own errors, Guard makes other ops do so, and RunRank aborts on any error or panic of
// a rank's step.
type Communicator interface {
	// Rank is this rank's index in [0, Size()).
	Rank() int
	// Size is the number of ranks N.
	Size() int
	// ExchangeCounts is the counts all-to-all. send holds Size()·n entries: send[j·n:(j+1)·n]
	// goes to rank j. It returns recv, with recv[i·n:(i+1)·n] from rank i. Every rank must pass
	// the same n. The values are on the host: for a device communicator this is the one host
	// synchronisation of an expert-parallel step (see the package documentation).
	ExchangeCounts(send []int32) (recv []int32, err error)
	// AllToAll moves blocks of rows between ranks. sends[j] lists, in order, the blocks of send
	// that go to rank j; recvs[i] lists, in order, the blocks of recv that the blocks from rank
	// i land in. The k-th block that rank i sends to rank j lands in the k-th block that rank j
	// receives from rank i, so the two must have the same length, and both buffers the same
	// dtype and row width. Rows of recv outside every block are left as they are. send and
	// recv must not share memory (no in-place exchange), nor, in one process, a rank's recv
	// with another rank's send.
	AllToAll(send, recv Buffer, sends, recvs [][]Block) error
	// Abort makes every pending and later collective of the group fail with an error that wraps
	// ErrAborted and err. It is safe to call from any goroutine, more than once.
	Abort(err error)
}

// GroupKeyer is a method a Communicator may have: GroupKey names its group, with a comparable
// value that is equal for every rank of one group and differs between groups (the in-process
// Group's communicators and nccl.Comm have it). NewPlan uses it to refuse a graph that already
// holds a plan of another rank of the same group: one graph is one rank's part of the step,
// and two ranks' collectives in one graph would wait for each other until the group's timeout
// (in-process) or forever (NCCL).
type GroupKeyer interface {
	GroupKey() any
}

// CheckCommunicator reports why c cannot serve as a rank of a group: it is nil (also a nil
// pointer, map or func held in the interface) or its Rank is outside [0, Size()). The ep ops and
// moe.NewExpertParallel call it on the communicator they are given.
func CheckCommunicator(c Communicator) error {
	if c == nil {
		return errors.New("communicator is nil")
	}
	switch v := reflect.ValueOf(c); v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Func, reflect.Chan, reflect.Slice, reflect.Interface:
		if v.IsNil() {
			return fmt.Errorf("communicator is a nil %T", c)
		}
	}
	if n, r := c.Size(), c.Rank(); n < 1 || r < 0 || r >= n {
		return fmt.Errorf("communicator says rank %d of %d", r, n)
	}
	return nil
}

// ErrAborted is wrapped by the errors of collectives of an aborted group.
var ErrAborted = errors.New("ep: communicator aborted")

// A Block is a run of Len rows of a Buffer starting at row Off.
type Block struct{ Off, Len int }

// A Buffer is a row-major matrix of Rows rows of Width elements, in host memory (Host is a
// []float32, []float64 or []int32 of Rows·Width elements) or in device memory (Device is its
// address; only device communicators accept it).
type Buffer struct {
	Host   any
	Device uintptr
	Dtype  tensor.Dtype
	Rows   int
	Width  int
}

// HostBuffer wraps a host slice ([]float32, []float64 or []int32) as a Buffer of rows of width
// elements.
func HostBuffer(data any, width int) (Buffer, error) {
	if width < 1 {
		return Buffer{}, fmt.Errorf("ep: buffer row width %d, want >= 1", width)
	}
	var n int
	var dt tensor.Dtype
	switch d := data.(type) {
	case []float32:
		n, dt = len(d), tensor.Float32
	case []float64:
		n, dt = len(d), tensor.Float64
	case []int32:
		n, dt = len(d), tensor.Int32
	default:
		return Buffer{}, fmt.Errorf("ep: host buffer is a %T, want []float32, []float64 or []int32", data)
	}
	if n%width != 0 {
		return Buffer{}, fmt.Errorf("ep: host buffer of %d elements is not a whole number of rows of %d", n, width)
	}
	return Buffer{Host: data, Dtype: dt, Rows: n / width, Width: width}, nil
}

// Check validates a buffer's fields against each other; what names the buffer in the error.
// Communicator implementations (the in-process Group, package ep/nccl) check their buffers
// with it.
func (b Buffer) Check(what string) error {
	if b.Width < 1 || b.Rows < 0 {
		return fmt.Errorf("ep: %s buffer has %d rows of width %d", what, b.Rows, b.Width)
	}
	if b.Host == nil {
		if b.Device == 0 && b.Rows > 0 {
			return fmt.Errorf("ep: %s buffer has neither host data nor a device address", what)
		}
		if b.Dtype.Type == nil || b.Dtype.Size() == 0 {
			return fmt.Errorf("ep: %s device buffer has no element dtype (%v)", what, b.Dtype)
		}
		return nil
	}
	h, err := HostBuffer(b.Host, b.Width)
	if err != nil {
		return fmt.Errorf("ep: %s buffer: %w", what, err)
	}
	if h.Dtype != b.Dtype || h.Rows != b.Rows {
		return fmt.Errorf("ep: %s buffer says %d rows of %v but holds %d rows of %v", what, b.Rows, b.Dtype, h.Rows, h.Dtype)
	}
	return nil
}

// CheckDisjoint returns an error if the memory of recv overlaps that of send (both host, or
// both device buffers), or if either fails Check; what names the pair in the error.
// Communicator implementations (the in-process Group, package ep/nccl) check their buffers
// with it: an exchange that reads rows it has already overwritten gives wrong rows.
func CheckDisjoint(what string, send, recv Buffer) error {
	if err := send.Check(what + ": send"); err != nil {
		return err
	}
	if err := recv.Check(what + ": receive"); err != nil {
		return err
	}
	if overlap(send, recv) {
		return fmt.Errorf("ep: %s: the receive buffer shares memory with the send buffer (no in-place exchange)", what)
	}
	return nil
}

// overlap reports whether the memory of a and b (both host or both device) overlaps.
func overlap(a, b Buffer) bool {
	s, r := a.span(), b.span()
	return s.hi > s.lo && r.hi > r.lo && s.lo < r.hi && r.lo < s.hi && (a.Host == nil) == (b.Host == nil)
}

// span is a checked buffer's memory as addresses [lo, hi): host or device.
func (b Buffer) span() (s struct{ lo, hi uintptr }) {
	n := uintptr(b.Rows) * uintptr(b.Width) * b.Dtype.Size()
	if b.Host == nil {
		s.lo = b.Device
	} else {
		switch d := b.Host.(type) {
		case []float32:
			s.lo = uintptr(unsafe.Pointer(unsafe.SliceData(d)))
		case []float64:
			s.lo = uintptr(unsafe.Pointer(unsafe.SliceData(d)))
		case []int32:
			s.lo = uintptr(unsafe.Pointer(unsafe.SliceData(d)))
		}
	}
	s.hi = s.lo + n
	return s
}

// CheckBlocks validates the block lists of an AllToAll against a buffer of rows rows and a
// group of n ranks; what names the lists in the error. Communicator implementations (the
// in-process Group, package ep/nccl) check their block lists with it.
func CheckBlocks(what string, lists [][]Block, n, rows int) error {
	if len(lists) != n {
		return fmt.Errorf("ep: %s has block lists for %d ranks, want %d", what, len(lists), n)
	}
	for r, l := range lists {
		for k, b := range l {
			if b.Off < 0 || b.Len < 0 || b.Off > rows || b.Len > rows-b.Off { // no b.Off+b.Len: it could wrap around
				return fmt.Errorf("ep: %s[%d][%d] = %d rows at row %d is outside the buffer's %d rows", what, r, k, b.Len, b.Off, rows)
			}
		}
	}
	return nil
}

// RunRank runs one rank's step, fn, for a rank that runs on its own (its own goroutine or
// process, as with NCCL; Group.Run does this for all ranks of an in-process group): if fn
// returns an error or panics, RunRank aborts c, so that the other ranks, waiting in a
// collective this rank will not reach, return an error instead of waiting forever, and
// returns the error (a panic as an error, with its stack). Run every expert-parallel step of a
// rank through it, or call c.Abort on every error yourself.
func RunRank(c Communicator, fn func() error) (err error) {
	if err := CheckCommunicator(c); err != nil {
		return opkit.Wrap("ep.RunRank", err)
	}
	if fn == nil {
		err = errors.New("gomoe: ep.RunRank: fn is nil")
		c.Abort(err)
		return err
	}
	returned := false
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("gomoe: ep: rank %d panicked: %v\n%s", c.Rank(), r, debug.Stack())
		} else if !returned {
			// fn neither returned nor panicked: runtime.Goexit (t.FailNow in a test, say).
			err = fmt.Errorf("gomoe: ep: rank %d's step exited without returning (runtime.Goexit)", c.Rank())
		}
		if err != nil {
			c.Abort(err)
		}
	}()
	err = fn()
	returned = true
	return err
}
