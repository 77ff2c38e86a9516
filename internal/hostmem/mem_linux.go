package hostmem

import "syscall"

// physical reads the physical memory from sysinfo(2); 0 if it fails.
func physical() uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}
