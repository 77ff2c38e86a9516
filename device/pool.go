package device

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
)

// Allocator is the raw allocator under a Pool: cuMemAlloc and cuMemFree in the gomoecuda build.
type Allocator interface {
	// Alloc returns n bytes of fresh memory.
	Alloc(n int64) (uintptr, error)
	// Free returns memory that Alloc gave.
	Free(p uintptr) error
}

// PoolStats counts a Pool's memory.
type PoolStats struct {
	LiveBlocks   int   // blocks handed out and not yet freed
	LiveBytes    int64 // their rounded sizes
	CachedBlocks int   // blocks kept for reuse
	CachedBytes  int64
	BackendAlloc int // calls to Allocator.Alloc so far
	BackendFree  int // calls to Allocator.Free so far
}

type block struct {
	size       int64 // rounded size
	persistent bool
	seq        uint64 // when it was handed out (EndStep's order)
	held       bool   // handed out during Hold: Free keeps it
}

// Pool is a caching allocator: freed blocks are kept in per-size free lists and handed out
// again for requests of the same rounded size, so a training loop that allocates the same
// shapes every step stops calling the allocator after its first step. Sizes round up to 512
// bytes below 1 MiB and to 2 MiB above. Blocks are step-scoped unless marked persistent:
// EndStep recycles every live step-scoped block at once. A Pool is safe for concurrent use.
type Pool struct {
	mu     sync.Mutex
	be     Allocator
	free   map[int64][]uintptr
	live   map[uintptr]block
	starts []uintptr    // sorted live block starts, for interior pointers
	dirty  bool         // starts needs a rebuild
	seq    uint64       // allocations so far
	hold   bool         // between Hold and Unhold
	held   []uintptr    // blocks handed out since Hold
	ended  []endedBlock // EndStep's scratch, kept to allocate nothing per step
	stats  PoolStats
}

// NewPool returns an empty Pool over be.
func NewPool(be Allocator) *Pool {
	return &Pool{be: be, free: map[int64][]uintptr{}, live: map[uintptr]block{}}
}

// MaxAlloc is the largest request a Pool takes (2^62 bytes, far beyond any device): its
// rounding up cannot wrap around int64.
const MaxAlloc = 1 << 62

// RoundSize is the size class of a request of n bytes (n itself beyond MaxAlloc, which Alloc
// refuses).
func RoundSize(n int64) int64 {
	switch {
	case n <= 512:
		return 512
	case n <= 1<<20:
		return (n + 511) &^ 511
	case n > MaxAlloc:
		return n
	}
	return (n + (2<<20 - 1)) &^ (2<<20 - 1)
}

// errNilPool is returned by the methods of a nil *Pool.
var errNilPool = errors.New("device: method called on a nil *Pool")

// ErrUnknownPointer is returned for a pointer the Pool did not hand out.
var ErrUnknownPointer = errors.New("device: pointer not allocated by this pool")

// Alloc returns a block of at least n bytes. It reuses a cached block of the same size class
// if there is one; if the allocator fails, it frees every cached block and tries once more.
func (p *Pool) Alloc(n int64, persistent bool) (uintptr, error) {
	if p == nil {
		return 0, errNilPool
	}
	if n < 0 || n > MaxAlloc {
		return 0, fmt.Errorf("device: allocation of %d bytes, want 0 to %d", n, int64(MaxAlloc))
	}
	if p.be == nil {
		return 0, errors.New("device: Pool has no allocator (make it with NewPool and an Allocator)")
	}
	size := RoundSize(n)
	p.mu.Lock()
	defer p.mu.Unlock()
	var ptr uintptr
	if l := p.free[size]; len(l) > 0 {
		ptr = l[len(l)-1]
		p.free[size] = l[:len(l)-1]
		p.stats.CachedBlocks--
		p.stats.CachedBytes -= size
	} else {
		var err error
		ptr, err = p.be.Alloc(size)
		p.stats.BackendAlloc++
		if err != nil {
			if ferr := p.trimLocked(); ferr != nil {
				return 0, fmt.Errorf("device: allocating %d bytes: %w (and freeing the cache: %v)", size, err, ferr)
			}
			ptr, err = p.be.Alloc(size)
			p.stats.BackendAlloc++
			if err != nil {
				return 0, fmt.Errorf("device: allocating %d bytes (%d bytes live): %w", size, p.stats.LiveBytes, err)
			}
		}
	}
	p.seq++
	if p.hold {
		persistent = true
		p.held = append(p.held, ptr)
	}
	p.live[ptr] = block{size: size, persistent: persistent, seq: p.seq, held: p.hold}
	p.stats.LiveBlocks++
	p.stats.LiveBytes += size
	p.dirty = true
	return ptr, nil
}

// Free returns the block at ptr to the cache.
func (p *Pool) Free(ptr uintptr) error {
	if p == nil {
		return errNilPool
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.live[ptr]
	if !ok {
		return ErrUnknownPointer
	}
	if p.hold && b.held {
		return nil // kept for the captured work (Hold)
	}
	p.releaseLocked(ptr, b)
	return nil
}

// Hold starts keeping every block handed out from now on: each is persistent, and Free of
// it does nothing, so no later request gets its memory. Device work captured into a CUDA
// graph reads and writes those blocks on every replay; Unhold returns them, for the graph's
// owner to free (Free) when the graph is gone.
func (p *Pool) Hold() error {
	if p == nil {
		return errNilPool
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold {
		return errors.New("device: Pool.Hold while holding")
	}
	p.hold, p.held = true, nil
	return nil
}

// Unhold ends Hold and returns the blocks handed out since, still live and persistent.
func (p *Pool) Unhold() []uintptr {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	held := p.held
	for _, ptr := range held {
		if b, ok := p.live[ptr]; ok {
			b.held = false
			p.live[ptr] = b
		}
	}
	p.hold, p.held = false, nil
	return held
}

func (p *Pool) releaseLocked(ptr uintptr, b block) {
	delete(p.live, ptr)
	p.free[b.size] = append(p.free[b.size], ptr)
	p.stats.LiveBlocks--
	p.stats.LiveBytes -= b.size
	p.stats.CachedBlocks++
	p.stats.CachedBytes += b.size
	p.dirty = true
}

// SetPersistent marks the block at ptr as persistent (EndStep keeps it) or step-scoped. A
// block handed out during Hold stays persistent until Unhold whatever it is set to (EndStep
// recycling it would hand the captured work's memory to a later request).
func (p *Pool) SetPersistent(ptr uintptr, persistent bool) error {
	if p == nil {
		return errNilPool
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.live[ptr]
	if !ok {
		return ErrUnknownPointer
	}
	b.persistent = persistent || b.held
	p.live[ptr] = b
	return nil
}

// EndStep returns every live step-scoped block to the cache and reports how many. It returns
// them newest first, so that each size class hands them out again in the order they were
// handed out in this step: a step that allocates what the last one did gets the same
// addresses (CUDA graph replay and bitwise reproducible runs rely on it).
func (p *Pool) EndStep() int {
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	step := p.ended[:0]
	for ptr, b := range p.live {
		if !b.persistent {
			step = append(step, endedBlock{ptr, b})
		}
	}
	slices.SortFunc(step, func(x, y endedBlock) int { return cmp.Compare(y.b.seq, x.b.seq) })
	for _, l := range step {
		p.releaseLocked(l.ptr, l.b)
	}
	p.ended = step[:0]
	return len(step)
}

// endedBlock is a block that EndStep returns.
type endedBlock struct {
	ptr uintptr
	b   block
}

// Owns reports whether ptr lies inside a live block, and that block's start and size.
func (p *Pool) Owns(ptr uintptr) (start uintptr, size int64, ok bool) {
	if p == nil {
		return 0, 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if b, ok := p.live[ptr]; ok {
		return ptr, b.size, true
	}
	if p.dirty {
		p.starts = p.starts[:0]
		for s := range p.live {
			p.starts = append(p.starts, s)
		}
		sort.Slice(p.starts, func(i, j int) bool { return p.starts[i] < p.starts[j] })
		p.dirty = false
	}
	i := sort.Search(len(p.starts), func(i int) bool { return p.starts[i] > ptr }) - 1
	if i < 0 {
		return 0, 0, false
	}
	s := p.starts[i]
	b := p.live[s]
	if ptr < s+uintptr(b.size) {
		return s, b.size, true
	}
	return 0, 0, false
}

// Trim frees every cached block to the allocator.
func (p *Pool) Trim() error {
	if p == nil {
		return errNilPool
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.trimLocked()
}

func (p *Pool) trimLocked() error {
	var first error
	for size, l := range p.free {
		for _, ptr := range l {
			p.stats.BackendFree++
			if err := p.be.Free(ptr); err != nil && first == nil {
				first = err
			}
			p.stats.CachedBlocks--
			p.stats.CachedBytes -= size
		}
		delete(p.free, size)
	}
	return first
}

// Close frees every block, live or cached, to the allocator. The Pool must not be used after.
func (p *Pool) Close() error {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for ptr, b := range p.live {
		p.releaseLocked(ptr, b)
	}
	return p.trimLocked()
}

// Stats returns the Pool's counters.
func (p *Pool) Stats() PoolStats {
	if p == nil {
		return PoolStats{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stats
}
