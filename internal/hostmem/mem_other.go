//go:build !linux

package hostmem

// physical is unknown off Linux: the fallback applies.
func physical() uint64 { return 0 }

// cgroup is Linux's: none elsewhere.
func cgroup() uint64 { return 0 }
