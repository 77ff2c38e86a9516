//go:build !linux

package hostmem

// physical is unknown off Linux: the fallback applies.
func physical() uint64 { return 0 }
