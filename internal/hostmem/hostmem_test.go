package hostmem

import (
	"math"
	"strings"
	"testing"
	"testing/fstest"
)

func TestCheck(t *testing.T) {
	if Total() < 1<<20 {
		t.Fatalf("Total() = %d bytes, want at least 1 MiB", Total())
	}
	prev := SetLimit(1000)
	defer SetLimit(prev)
	for _, c := range []struct {
		bytes float64
		want  string
	}{
		{999, ""}, {1000, ""},
		{1001, "weights need 1001 bytes, more than the 1000 bytes of memory this process may use (a limit set by SetLimit)"},
		{1e300, "more than"},
	} {
		err := Check("weights", c.bytes)
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Check(%g) = %v, want %q", c.bytes, err, c.want)
		}
	}
}

// TestCgroupLimit reads the limits of made-up file systems laid out as Linux lays out
// /proc/self/cgroup and the cgroup mounts.
func TestCgroupLimit(t *testing.T) {
	const none = "9223372036854771712" // cgroup v1's "no limit"
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, c := range []struct {
		name  string
		files map[string]string
		want  uint64
	}{
		{"no /proc/self/cgroup", map[string]string{"sys/fs/cgroup/memory.max": "1000"}, 0},
		{"v2, limit on the group", map[string]string{
			"proc/self/cgroup": "0::/user.slice/run.scope\n",
			"sys/fs/cgroup/user.slice/run.scope/memory.max": "8589934592\n",
			"sys/fs/cgroup/user.slice/memory.max":           "max\n",
		}, 8 << 30},
		{"v2, a smaller limit on a parent binds", map[string]string{
			"proc/self/cgroup": "0::/user.slice/run.scope",
			"sys/fs/cgroup/user.slice/run.scope/memory.max": "max",
			"sys/fs/cgroup/user.slice/memory.max":           "4294967296",
		}, 4 << 30},
		{"v2, no limit anywhere", map[string]string{
			"proc/self/cgroup":           "0::/a",
			"sys/fs/cgroup/a/memory.max": "max",
		}, 0},
		{"v2, a container sees its group as the root", map[string]string{
			"proc/self/cgroup":         "0::/kubepods/pod1/c1",
			"sys/fs/cgroup/memory.max": "1073741824",
		}, 1 << 30},
		{"v2 on a hybrid machine", map[string]string{
			"proc/self/cgroup":                   "1:name=systemd:/a\n0::/a\n",
			"sys/fs/cgroup/unified/a/memory.max": "2000000",
		}, 2000000},
		{"v1, no limit (this machine's kind)", map[string]string{
			"proc/self/cgroup":                                           "9:name=systemd:/\n4:memory:/process_api/d32\n0::/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":                 none,
			"sys/fs/cgroup/memory/process_api/memory.limit_in_bytes":     none,
			"sys/fs/cgroup/memory/process_api/d32/memory.limit_in_bytes": none,
		}, 0},
		{"v1, limit on the group, memory among other controllers", map[string]string{
			"proc/self/cgroup":                                      "3:cpu,memory:/docker/abc\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes":            none,
			"sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes": "536870912",
		}, 512 << 20},
		{"v1 and v2 both limited: the smaller", map[string]string{
			"proc/self/cgroup": "4:memory:/a\n0::/a\n",
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "3000",
			"sys/fs/cgroup/unified/a/memory.max":           "5000",
		}, 3000},
		{"a controller named like memory is not memory", map[string]string{
			"proc/self/cgroup": "4:memoryx:/a\n",
			"sys/fs/cgroup/memory/a/memory.limit_in_bytes": "3000",
		}, 0},
		{"unreadable limits and lines are skipped", map[string]string{
			"proc/self/cgroup":           "junk\n0::/a\n",
			"sys/fs/cgroup/a/memory.max": "lots",
			"sys/fs/cgroup/memory.max":   "-5",
		}, 0},
		{"a group path cannot climb out of the mount", map[string]string{
			"proc/self/cgroup":         "0::/../../etc",
			"sys/fs/cgroup/memory.max": "7000",
			"etc/memory.max":           "10",
		}, 7000},
	} {
		t.Run(c.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for name, data := range c.files {
				fsys[name] = file(data)
			}
			if got := cgroupLimit(fsys); got != c.want {
				t.Errorf("cgroupLimit = %d, want %d", got, c.want)
			}
		})
	}
}

// TestCheckNaN: a byte count that is NaN (a caller's arithmetic gone wrong) is not a size
// that fits: Check returned nil for it, as NaN > limit is false.
func TestCheckNaN(t *testing.T) {
	prev := SetLimit(1000)
	defer SetLimit(prev)
	if err := Check("weights", math.NaN()); err == nil {
		t.Error("Check(NaN) = nil, want an error")
	}
	if err := Check("weights", math.Inf(1)); err == nil {
		t.Error("Check(+Inf) = nil, want an error")
	}
}
