package device

import (
	"math/rand/v2"
	"testing"
)

func TestPoolModel(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		rng := rand.New(rand.NewPCG(seed, 9))
		be := newFake(int64(rng.IntN(64)+1) << 20)
		p := NewPool(be)
		var mine []uintptr
		holding := false
		heldSet := map[uintptr]bool{}
		for i := 0; i < 400; i++ {
			switch op := rng.IntN(10); {
			case op < 4:
				n := []int64{1, 512, 513, 4000, 1 << 20, 1<<20 + 1, 5 << 20}[rng.IntN(7)]
				ptr, err := p.Alloc(n, rng.IntN(3) == 0)
				if err == nil {
					if heldSet[ptr] {
						t.Fatalf("seed %d: held block %#x handed out again", seed, ptr)
					}
					if holding {
						heldSet[ptr] = true
					}
					mine = append(mine, ptr)
				}
			case op < 6 && len(mine) > 0:
				j := rng.IntN(len(mine))
				_ = p.Free(mine[j])
			case op == 6:
				if !holding {
					_ = p.Hold()
					holding = true
				} else {
					for _, h := range p.Unhold() {
						delete(heldSet, h)
					}
					holding = false
				}
			case op == 7:
				p.EndStep()
			case op == 8 && len(mine) > 0:
				_ = p.SetPersistent(mine[rng.IntN(len(mine))], rng.IntN(2) == 0)
			case op == 9:
				if rng.IntN(4) == 0 {
					_ = p.Trim()
				}
			}
			s := p.Stats()
			var lb, cb int64
			for _, b := range p.live {
				lb += b.size
			}
			nc := 0
			seen := map[uintptr]bool{}
			for sz, l := range p.free {
				for _, ptr := range l {
					if _, ok := p.live[ptr]; ok || seen[ptr] {
						t.Fatalf("seed %d op %d: %#x cached twice or live and cached", seed, i, ptr)
					}
					seen[ptr] = true
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
