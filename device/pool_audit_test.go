package device

import "testing"

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
