// Package hostmem tells how much memory this machine has, so that gomoe can reject a size it
// cannot hold with an error before allocating it (a Go allocation that fails is a fatal error
// that no caller can recover, not a panic).
package hostmem

import (
	"fmt"
	"sync"
	"sync/atomic"
)

// fallback is the limit where the machine's memory cannot be read: 1 TiB.
const fallback = 1 << 40

var (
	once     sync.Once
	total    uint64
	override atomic.Uint64
)

// Total is the machine's physical memory in bytes (1 TiB where it cannot be read), or the
// value SetLimit set.
func Total() uint64 {
	if v := override.Load(); v != 0 {
		return v
	}
	once.Do(func() {
		total = physical()
		if total == 0 {
			total = fallback
		}
	})
	return total
}

// SetLimit makes Total return n (n = 0: the machine's memory again) and returns the previous
// override; for tests.
func SetLimit(n uint64) uint64 { return override.Swap(n) }

// Check returns an error naming what if bytes (computed in floating point by the caller, so
// that no product wraps around) exceed the machine's memory.
func Check(what string, bytes float64) error {
	if t := Total(); bytes > float64(t) {
		return fmt.Errorf("%s need %.4g bytes, more than this machine's %d bytes of memory", what, bytes, t)
	}
	return nil
}
