package device

import (
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
)

// modelBlock is what TestPoolModel's model knows of a block handed out and not yet freed.
type modelBlock struct {
	size       int64
	persistent bool
	held       bool // handed out since the last Hold, which has not ended
}

// TestPoolModel runs random interleavings of every Pool operation (Alloc, Free, of live and of
// freed pointers, Hold and Unhold, also out of turn, EndStep, SetPersistent, Trim, Owns) against
// a model of the blocks handed out, and checks each result against the model: no block is
// handed out while live, Free and SetPersistent know exactly the live blocks, EndStep returns
// exactly the live step-scoped blocks that are not held, Unhold returns the blocks of its Hold
// in order, Owns finds every live block from any interior pointer; and the pool's counts
// against its free lists and the allocator's.
func TestPoolModel(t *testing.T) {
	sizes := []int64{0, 1, 512, 513, 4000, 1 << 20, 1<<20 + 1, 5 << 20}
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 9))
		be := newFake(int64(rng.IntN(64)+1) << 20)
		p := NewPool(be)
		model := map[uintptr]modelBlock{}
		var seen []uintptr // every pointer handed out, live or freed since
		holding := false
		var heldOrder []uintptr
		pick := func() uintptr { return seen[rng.IntN(len(seen))] }
		for i := 0; i < 400; i++ {
			switch op := rng.IntN(12); {
			case op < 4:
				n := sizes[rng.IntN(len(sizes))]
				pers := rng.IntN(3) == 0
				before := p.Stats()
				ptr, err := p.Alloc(n, pers)
				if err != nil {
					if s := p.Stats(); s.LiveBlocks != before.LiveBlocks || s.LiveBytes != before.LiveBytes {
						t.Fatalf("seed %d op %d: a failed Alloc changed the live counts: %+v, was %+v", seed, i, s, before)
					}
					break
				}
				if _, ok := model[ptr]; ok {
					t.Fatalf("seed %d op %d: Alloc handed out the live block %#x again (%+v)", seed, i, ptr, model[ptr])
				}
				size := RoundSize(n)
				for q, b := range model {
					if ptr < q+uintptr(b.size) && q < ptr+uintptr(size) {
						t.Fatalf("seed %d op %d: Alloc gave [%#x,+%d), overlapping the live block [%#x,+%d)", seed, i, ptr, size, q, b.size)
					}
				}
				model[ptr] = modelBlock{size: size, persistent: pers || holding, held: holding}
				if holding {
					heldOrder = append(heldOrder, ptr)
				}
				if !slices.Contains(seen, ptr) {
					seen = append(seen, ptr)
				}
			case op < 6 && len(seen) > 0:
				ptr := pick()
				err := p.Free(ptr)
				b, live := model[ptr]
				switch {
				case !live:
					if !errors.Is(err, ErrUnknownPointer) {
						t.Fatalf("seed %d op %d: Free of the freed block %#x = %v, want ErrUnknownPointer", seed, i, ptr, err)
					}
				case err != nil:
					t.Fatalf("seed %d op %d: Free of the live block %#x: %v", seed, i, ptr, err)
				case !b.held:
					delete(model, ptr)
				}
			case op == 6:
				err := p.Hold()
				if holding != (err != nil) {
					t.Fatalf("seed %d op %d: Hold while holding=%v: %v", seed, i, holding, err)
				}
				if !holding {
					holding, heldOrder = true, nil
				}
			case op == 7:
				got := p.Unhold()
				want := heldOrder
				if !holding {
					want = nil
				}
				if !slices.Equal(got, want) {
					t.Fatalf("seed %d op %d: Unhold = %#x, want %#x", seed, i, got, want)
				}
				for _, ptr := range got {
					b := model[ptr]
					b.held = false
					model[ptr] = b
				}
				holding, heldOrder = false, nil
			case op == 8:
				want := 0
				for ptr, b := range model {
					if !b.persistent {
						if b.held {
							t.Fatalf("seed %d op %d: the held block %#x is step-scoped in the model", seed, i, ptr)
						}
						delete(model, ptr)
						want++
					}
				}
				if n := p.EndStep(); n != want {
					t.Fatalf("seed %d op %d: EndStep returned %d blocks, want %d", seed, i, n, want)
				}
			case op == 9 && len(seen) > 0:
				ptr, v := pick(), rng.IntN(2) == 0
				err := p.SetPersistent(ptr, v)
				if b, live := model[ptr]; live {
					if err != nil {
						t.Fatalf("seed %d op %d: SetPersistent of the live block %#x: %v", seed, i, ptr, err)
					}
					b.persistent = v || b.held
					model[ptr] = b
				} else if !errors.Is(err, ErrUnknownPointer) {
					t.Fatalf("seed %d op %d: SetPersistent of the freed block %#x = %v, want ErrUnknownPointer", seed, i, ptr, err)
				}
			case op == 10:
				if rng.IntN(4) == 0 {
					if err := p.Trim(); err != nil {
						t.Fatalf("seed %d op %d: Trim: %v", seed, i, err)
					}
				}
			case op == 11 && len(seen) > 0:
				ptr := pick()
				if b, live := model[ptr]; live {
					off := uintptr(rng.Int64N(b.size))
					if s, n, ok := p.Owns(ptr + off); !ok || s != ptr || n != b.size {
						t.Fatalf("seed %d op %d: Owns(%#x+%d) = %#x, %d, %v; want the live block %#x of %d", seed, i, ptr, off, s, n, ok, ptr, b.size)
					}
				} else if s, _, ok := p.Owns(ptr); ok {
					t.Fatalf("seed %d op %d: Owns(%#x) finds %#x, but no live block holds it", seed, i, ptr, s)
				}
			}
			s := p.Stats()
			var lb, cb, mb int64
			for _, b := range p.live {
				lb += b.size
			}
			for ptr, b := range model {
				mb += b.size
				pb, ok := p.live[ptr]
				if !ok || pb.size != b.size || pb.persistent != b.persistent || pb.held != b.held {
					t.Fatalf("seed %d op %d: block %#x is %+v (live %v) in the pool, %+v in the model", seed, i, ptr, pb, ok, b)
				}
			}
			if len(p.live) != len(model) || lb != mb {
				t.Fatalf("seed %d op %d: the pool has %d live blocks (%d bytes), the model %d (%d)", seed, i, len(p.live), lb, len(model), mb)
			}
			nc := 0
			cached := map[uintptr]bool{}
			for sz, l := range p.free {
				for _, ptr := range l {
					if _, ok := p.live[ptr]; ok || cached[ptr] {
						t.Fatalf("seed %d op %d: %#x cached twice or live and cached", seed, i, ptr)
					}
					if be.live[ptr] != sz {
						t.Fatalf("seed %d op %d: cached %#x in size class %d, the allocator gave %d", seed, i, ptr, sz, be.live[ptr])
					}
					cached[ptr] = true
					cb += sz
					nc++
				}
			}
			if s.LiveBlocks != len(p.live) || s.LiveBytes != lb || s.CachedBlocks != nc || s.CachedBytes != cb {
				t.Fatalf("seed %d op %d: stats %+v, counted %d/%d live %d/%d cached", seed, i, s, len(p.live), lb, nc, cb)
			}
			if len(be.live) != len(p.live)+nc || s.BackendFree != be.freed {
				t.Fatalf("seed %d op %d: backend holds %d, pool %d+%d", seed, i, len(be.live), len(p.live), nc)
			}
		}
		if err := p.Close(); err != nil || len(be.live) != 0 {
			t.Fatalf("seed %d: Close: %v, %d left", seed, err, len(be.live))
		}
	}
}
