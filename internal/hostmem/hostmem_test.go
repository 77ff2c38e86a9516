package hostmem

import (
	"strings"
	"testing"
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
		{999, ""}, {1000, ""}, {1001, "weights need 1001 bytes, more than this machine's 1000 bytes"}, {1e300, "more than"},
	} {
		err := Check("weights", c.bytes)
		if (err == nil) != (c.want == "") || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("Check(%g) = %v, want %q", c.bytes, err, c.want)
		}
	}
}
