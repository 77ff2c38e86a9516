package device

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
)

// fakeAllocator hands out increasing fake addresses and can be told to fail.
type fakeAllocator struct {
	next     uintptr
	live     map[uintptr]int64
	limit    int64 // bytes; 0 = unlimited
	used     int64
	freed    int
	failFree bool
}

func newFake(limit int64) *fakeAllocator {
	return &fakeAllocator{next: 1 << 20, live: map[uintptr]int64{}, limit: limit}
}

func (f *fakeAllocator) Alloc(n int64) (uintptr, error) {
	if f.limit > 0 && f.used+n > f.limit {
		return 0, errors.New("out of memory")
	}
	p := f.next
	f.next += uintptr(n) + 4096
	f.live[p] = n
	f.used += n
	return p, nil
}

func (f *fakeAllocator) Free(p uintptr) error {
	n, ok := f.live[p]
	if !ok {
		return fmt.Errorf("double free of %#x", p)
	}
	delete(f.live, p)
	f.used -= n
	f.freed++
	return nil
}

func TestRoundSize(t *testing.T) {
	for _, c := range []struct{ n, want int64 }{
		{0, 512}, {1, 512}, {512, 512}, {513, 1024}, {1 << 20, 1 << 20},
		{1<<20 + 1, 2 << 20}, {3 << 20, 4 << 20}, {4 << 20, 4 << 20},
		{MaxAlloc - 1, MaxAlloc}, {MaxAlloc, MaxAlloc},
		// Beyond MaxAlloc (which Alloc refuses) the size is its own class: rounding up used
		// to wrap around to a negative size.
		{MaxAlloc + 1, MaxAlloc + 1}, {math.MaxInt64, math.MaxInt64},
	} {
		if got := RoundSize(c.n); got != c.want {
			t.Errorf("RoundSize(%d) = %d, want %d", c.n, got, c.want)
		}
	}
}

func TestPoolReuse(t *testing.T) {
	be := newFake(0)
	p := NewPool(be)
	a, err := p.Alloc(1000, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Free(a); err != nil {
		t.Fatal(err)
	}
	b, err := p.Alloc(900, false) // same class (1024)
	if err != nil {
		t.Fatal(err)
	}
	if b != a {
		t.Errorf("Alloc after Free gave %#x, want the cached %#x", b, a)
	}
	if s := p.Stats(); s.BackendAlloc != 1 || s.LiveBlocks != 1 || s.LiveBytes != 1024 || s.CachedBlocks != 0 {
		t.Errorf("stats %+v, want 1 backend alloc, 1 live block of 1024, none cached", s)
	}
	c, _ := p.Alloc(5000, false) // other class: a new block
	if c == a {
		t.Error("a different size class reused the same block")
	}
	if err := p.Free(12345); !errors.Is(err, ErrUnknownPointer) {
		t.Errorf("Free(unknown) = %v, want ErrUnknownPointer", err)
	}
	if err := p.Free(b); err != nil {
		t.Fatal(err)
	}
	if err := p.Free(b); !errors.Is(err, ErrUnknownPointer) {
		t.Errorf("double Free = %v, want ErrUnknownPointer", err)
	}
}

func TestPoolSteps(t *testing.T) {
	be := newFake(0)
	p := NewPool(be)
	w, _ := p.Alloc(4096, true) // a weight
	for step := 0; step < 100; step++ {
		for i := 0; i < 5; i++ {
			if _, err := p.Alloc(int64(1000*(i+1)), false); err != nil {
				t.Fatal(err)
			}
		}
		if n := p.EndStep(); n != 5 {
			t.Fatalf("step %d: EndStep released %d blocks, want 5", step, n)
		}
	}
	s := p.Stats()
	if s.BackendAlloc != 6 {
		t.Errorf("100 identical steps made %d backend allocations, want 6 (flat memory)", s.BackendAlloc)
	}
	if s.LiveBlocks != 1 {
		t.Errorf("%d live blocks after the steps, want the 1 persistent", s.LiveBlocks)
	}
	if _, _, ok := p.Owns(w); !ok {
		t.Error("the persistent block was released by EndStep")
	}
	if err := p.SetPersistent(w, false); err != nil {
		t.Fatal(err)
	}
	if n := p.EndStep(); n != 1 {
		t.Errorf("EndStep after SetPersistent(false) released %d, want 1", n)
	}
	if err := p.SetPersistent(w, true); !errors.Is(err, ErrUnknownPointer) {
		t.Errorf("SetPersistent on a freed block = %v, want ErrUnknownPointer", err)
	}
}

func TestPoolOwns(t *testing.T) {
	p := NewPool(newFake(0))
	a, _ := p.Alloc(2000, false) // 2048-byte class
	b, _ := p.Alloc(100, false)
	for _, c := range []struct {
		ptr   uintptr
		ok    bool
		start uintptr
	}{
		{a, true, a}, {a + 100, true, a}, {a + 2047, true, a}, {a + 2048, false, 0},
		{b, true, b}, {b + 511, true, b}, {a - 1, false, 0}, {0, false, 0},
	} {
		start, _, ok := p.Owns(c.ptr)
		if ok != c.ok || start != c.start {
			t.Errorf("Owns(%#x) = %#x, %v; want %#x, %v", c.ptr, start, ok, c.start, c.ok)
		}
	}
	_ = p.Free(a)
	if _, _, ok := p.Owns(a + 10); ok {
		t.Error("Owns finds a freed block")
	}
}

func TestPoolOutOfMemory(t *testing.T) {
	be := newFake(4 << 20)
	p := NewPool(be)
	a, err := p.Alloc(2<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Free(a) // cached: 2 MiB still held from the backend
	// 4 MiB more does not fit next to the cached block: the pool must free its cache and retry.
	if _, err := p.Alloc(3<<20-1, false); err != nil {
		t.Fatalf("Alloc after trimming the cache: %v", err)
	}
	if be.freed != 1 {
		t.Errorf("backend frees %d, want 1 (the cached block)", be.freed)
	}
	if _, err := p.Alloc(1<<20, false); err == nil {
		t.Error("Alloc beyond the backend limit: no error")
	}
	// The pool stays usable after the failure.
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if len(be.live) != 0 {
		t.Errorf("%d backend blocks left after Close", len(be.live))
	}
	for _, n := range []int64{-1, MaxAlloc + 1, math.MaxInt64} {
		if _, err := p.Alloc(n, false); err == nil || !strings.Contains(err.Error(), "want 0 to 4611686018427387904") {
			t.Errorf("Alloc(%d): %v, want an error naming the range", n, err)
		}
	}
	if st := p.Stats(); st.LiveBytes != 0 || st.LiveBlocks != 0 {
		t.Errorf("refused allocations count as live: %+v", st)
	}
	// A pool made without NewPool's allocator refuses to allocate instead of panicking.
	if _, err := NewPool(nil).Alloc(16, false); err == nil || !strings.Contains(err.Error(), "no allocator") {
		t.Errorf("Alloc on a pool without an allocator: %v", err)
	}
}

// TestPoolStepAddressesRepeat: a step that allocates what the last one did (with frees in
// between and persistent blocks among them) gets the same address for each request, step
// after step.
func TestPoolStepAddressesRepeat(t *testing.T) {
	p := NewPool(newFake(0))
	sizes := []int64{512, 4096, 512, 3 << 20, 512, 4096, 700, 512}
	step := func() []uintptr {
		var got []uintptr
		for i, n := range sizes {
			ptr, err := p.Alloc(n, false)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, ptr)
			if i == 2 { // a scratch block freed at once, reused later in the step
				if err := p.Free(ptr); err != nil {
					t.Fatal(err)
				}
			}
		}
		return got
	}
	first := step()
	p.EndStep()
	for s := 1; s < 20; s++ {
		got := step()
		for i := range got {
			if got[i] != first[i] {
				t.Fatalf("step %d, request %d (%d bytes): address %#x, step 0 had %#x", s, i, sizes[i], got[i], first[i])
			}
		}
		p.EndStep()
	}
}

// TestPoolHold: blocks handed out while holding survive EndStep and Free, and no later request
// gets them; after Unhold their owner frees them and they are reused.
func TestPoolHold(t *testing.T) {
	p := NewPool(newFake(0))
	before, _ := p.Alloc(512, false)
	if err := p.Hold(); err != nil {
		t.Fatal(err)
	}
	if err := p.Hold(); err == nil {
		t.Error("second Hold: no error")
	}
	a, _ := p.Alloc(512, false)
	b, _ := p.Alloc(4096, false)
	if err := p.Free(b); err != nil { // a scratch block freed at once stays the graph's
		t.Fatal(err)
	}
	held := p.Unhold()
	if len(held) != 2 || held[0] != a || held[1] != b {
		t.Fatalf("Unhold = %#x, want [%#x %#x]", held, a, b)
	}
	if n := p.EndStep(); n != 1 { // only the block from before Hold
		t.Errorf("EndStep recycled %d blocks, want 1", n)
	}
	for i := 0; i < 4; i++ {
		x, _ := p.Alloc(512, false)
		y, _ := p.Alloc(4096, false)
		if x == a || y == b || x == b || y == a {
			t.Fatalf("a held block was handed out again: %#x %#x (held %#x %#x)", x, y, a, b)
		}
		if i == 0 && x != before {
			t.Errorf("the recycled block %#x was not reused (got %#x)", before, x)
		}
	}
	for _, ptr := range held {
		if err := p.Free(ptr); err != nil {
			t.Fatal(err)
		}
	}
	p.EndStep()
	got := map[uintptr]bool{}
	for i := 0; i < 6; i++ {
		x, _ := p.Alloc(512, false)
		got[x] = true
	}
	if !got[a] {
		t.Errorf("the freed held block %#x was not reused", a)
	}
}

// TestPoolHeldBlockStaysPersistent: a block handed out during Hold is persistent until Unhold
// (and after, as Unhold's doc says); SetPersistent(false) on it while holding used to let
// EndStep recycle it, so a later request of the capture got the same memory, Unhold returned
// it twice, and the graph's owner freed it twice (the second Free hitting whoever had it).
func TestPoolHeldBlockStaysPersistent(t *testing.T) {
	p := NewPool(newFake(0))
	if err := p.Hold(); err != nil {
		t.Fatal(err)
	}
	a, _ := p.Alloc(512, false)
	if err := p.SetPersistent(a, false); err != nil {
		t.Fatal(err)
	}
	if n := p.EndStep(); n != 0 {
		t.Errorf("EndStep during Hold recycled %d blocks, want 0 (a held block)", n)
	}
	b, _ := p.Alloc(512, false)
	if b == a {
		t.Errorf("a block still held (%#x) was handed out again", a)
	}
	held := p.Unhold()
	if len(held) != 2 || held[0] == held[1] {
		t.Errorf("Unhold = %#x, want two distinct blocks", held)
	}
	for _, ptr := range held {
		if _, _, ok := p.Owns(ptr); !ok {
			t.Errorf("Unhold returned %#x, which is not live", ptr)
		}
	}
	if n := p.EndStep(); n != 0 {
		t.Errorf("EndStep after Unhold recycled %d blocks, want 0 (Unhold returns them persistent)", n)
	}
}
