package ep

import (
	"fmt"
	"testing"
)

func TestSelfRuns(t *testing.T) {
	for _, c := range []struct {
		name         string
		sends, recvs []Block
		want         string
		err          bool
	}{
		{"one rank A=1: one copy", []Block{{0, 3}, {3, 2}, {5, 4}}, []Block{{0, 3}, {3, 2}, {5, 4}}, "[{0 0 9}]", false},
		{"empty blocks skipped", []Block{{0, 3}, {3, 0}, {3, 2}}, []Block{{0, 0}, {0, 3}, {3, 2}, {5, 0}}, "[{0 0 5}]", false},
		{"aligned receive: gaps", []Block{{0, 3}, {3, 2}}, []Block{{0, 3}, {4, 2}}, "[{0 0 3} {3 4 2}]", false},
		{"gap on the send side", []Block{{0, 1}, {2, 1}}, []Block{{0, 1}, {1, 1}}, "[{0 0 1} {2 1 1}]", false},
		{"offsets", []Block{{7, 2}, {9, 1}}, []Block{{3, 2}, {5, 1}}, "[{7 3 3}]", false},
		{"nothing", nil, []Block{{0, 0}}, "[]", false},
		{"length mismatch", []Block{{0, 3}}, []Block{{0, 2}}, "", true},
		{"extra send", []Block{{0, 1}, {1, 1}}, []Block{{0, 1}}, "", true},
		{"extra receive", []Block{{0, 1}}, []Block{{0, 1}, {5, 1}}, "", true},
	} {
		runs, err := selfRuns(c.sends, c.recvs)
		if c.err {
			if err == nil {
				t.Errorf("%s: no error", c.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := fmt.Sprint(runs); got != c.want && !(c.want == "[]" && len(runs) == 0) {
			t.Errorf("%s: runs %s, want %s", c.name, got, c.want)
		}
	}
}
