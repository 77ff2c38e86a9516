// Package hostmem tells how much memory this process may use, so that gomoe can reject a size
// it cannot hold with an error before allocating it (a Go allocation that fails is a fatal
// error that no caller can recover, not a panic, and a process over its container's limit is
// killed by the kernel).
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
	source   string
	override atomic.Uint64
)

// Total is the memory this process may use, in bytes: the machine's physical memory or, where
// it is smaller, the memory limit of the process's control group (a container's limit); 1 TiB
// where neither can be read; or the value SetLimit set.
func Total() uint64 {
	t, _ := limit()
	return t
}

// limit returns Total and where it comes from, in words.
func limit() (uint64, string) {
	if v := override.Load(); v != 0 {
		return v, "a limit set by SetLimit"
	}
	once.Do(func() {
		total, source = physical(), "the machine's physical memory"
		if c := cgroup(); c != 0 && (total == 0 || c < total) {
			total, source = c, "the memory limit of its control group"
		}
		if total == 0 {
			total, source = fallback, "an assumed 1 TiB: the machine's memory could not be read"
		}
	})
	return total, source
}

// SetLimit makes Total return n (n = 0: the machine's memory again) and returns the previous
// override; for tests.
func SetLimit(n uint64) uint64 { return override.Swap(n) }

// Check returns an error naming what if bytes (computed in floating point by the caller, so
// that no product wraps around) exceed the memory this process may use, or are NaN.
func Check(what string, bytes float64) error {
	if t, src := limit(); !(bytes <= float64(t)) {
		return fmt.Errorf("%s need %.4g bytes, more than the %d bytes of memory this process may use (%s)", what, bytes, t, src)
	}
	return nil
}
