package hostmem

import (
	"os"
	"syscall"
)

// physical reads the physical memory from sysinfo(2); 0 if it fails.
func physical() uint64 {
	var si syscall.Sysinfo_t
	if err := syscall.Sysinfo(&si); err != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}

// cgroup is the memory limit of this process's control groups; 0 for none.
func cgroup() uint64 { return cgroupLimit(os.DirFS("/")) }
