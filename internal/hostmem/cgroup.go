package hostmem

import (
	"io/fs"
	"path"
	"strconv"
	"strings"
)

// cgroupLimit returns the smallest memory limit set on this process's control groups, read
// from fsys (the file system root): cgroup v2's memory.max and cgroup v1's
// memory.limit_in_bytes, on the group itself and each group above it (a parent's limit binds
// its children). It returns 0 where no limit is set or none can be read. The groups are those
// /proc/self/cgroup names, under the usual mount points (/sys/fs/cgroup, and
// /sys/fs/cgroup/unified and /sys/fs/cgroup/memory on hybrid machines); a container that mounts
// its own group as the root is read at the root.
func cgroupLimit(fsys fs.FS) uint64 {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return 0
	}
	var least uint64
	take := func(v uint64) {
		if v != 0 && (least == 0 || v < least) {
			least = v
		}
	}
	for _, line := range strings.Split(string(data), "\n") {
		// id:controllers:path, where path may itself hold colons.
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			take(groupLimit(fsys, "sys/fs/cgroup", f[2], "memory.max"))
			take(groupLimit(fsys, "sys/fs/cgroup/unified", f[2], "memory.max"))
		case hasController(f[1], "memory"):
			take(groupLimit(fsys, "sys/fs/cgroup/memory", f[2], "memory.limit_in_bytes"))
		}
	}
	return least
}

// hasController reports whether the comma-separated list holds name.
func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// groupLimit returns the smallest limit in file on the group at mount/group and on every group
// above it up to mount (0 for none). Where the group's folder does not exist (a container whose
// namespace shows its own group as the root), the search starts at mount.
func groupLimit(fsys fs.FS, mount, group, file string) uint64 {
	dir := path.Join(mount, path.Clean("/" + group)[1:])
	if _, err := fs.Stat(fsys, dir); err != nil {
		dir = mount
	}
	var least uint64
	for {
		if v := readLimit(fsys, path.Join(dir, file)); v != 0 && (least == 0 || v < least) {
			least = v
		}
		if dir == mount || !strings.HasPrefix(dir, mount+"/") {
			return least
		}
		dir = path.Dir(dir)
	}
}

// readLimit parses a limit file: a byte count, or "max" (no limit, 0). cgroup v1 writes no
// limit as a number near 2⁶³, which counts as none too.
func readLimit(fsys fs.FS, name string) uint64 {
	data, err := fs.ReadFile(fsys, name)
	if err != nil {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil || v >= 1<<62 {
		return 0
	}
	return v
}
