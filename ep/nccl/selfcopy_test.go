package nccl

import (
	"fmt"
	"testing"

	"github.com/gomoe/gomoe/ep"
)

func TestSelfRuns(t *testing.T) {
	for _, c := range []struct {
		name         string
		sends, recvs []ep.Block
		want         string
		err          bool
	}{
		{"one rank A=1: one copy", []ep.Block{{Off: 0, Len: 3}, {Off: 3, Len: 2}, {Off: 5, Len: 4}}, []ep.Block{{Off: 0, Len: 3}, {Off: 3, Len: 2}, {Off: 5, Len: 4}}, "[{0 0 9}]", false},
		{"empty blocks skipped", []ep.Block{{Off: 0, Len: 3}, {Off: 3, Len: 0}, {Off: 3, Len: 2}}, []ep.Block{{Off: 0, Len: 0}, {Off: 0, Len: 3}, {Off: 3, Len: 2}, {Off: 5, Len: 0}}, "[{0 0 5}]", false},
		{"aligned receive: gaps", []ep.Block{{Off: 0, Len: 3}, {Off: 3, Len: 2}}, []ep.Block{{Off: 0, Len: 3}, {Off: 4, Len: 2}}, "[{0 0 3} {3 4 2}]", false},
		{"gap on the send side", []ep.Block{{Off: 0, Len: 1}, {Off: 2, Len: 1}}, []ep.Block{{Off: 0, Len: 1}, {Off: 1, Len: 1}}, "[{0 0 1} {2 1 1}]", false},
		{"offsets", []ep.Block{{Off: 7, Len: 2}, {Off: 9, Len: 1}}, []ep.Block{{Off: 3, Len: 2}, {Off: 5, Len: 1}}, "[{7 3 3}]", false},
		{"nothing", nil, []ep.Block{{Off: 0, Len: 0}}, "[]", false},
		{"length mismatch", []ep.Block{{Off: 0, Len: 3}}, []ep.Block{{Off: 0, Len: 2}}, "", true},
		{"extra send", []ep.Block{{Off: 0, Len: 1}, {Off: 1, Len: 1}}, []ep.Block{{Off: 0, Len: 1}}, "", true},
		{"extra receive", []ep.Block{{Off: 0, Len: 1}}, []ep.Block{{Off: 0, Len: 1}, {Off: 5, Len: 1}}, "", true},
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
