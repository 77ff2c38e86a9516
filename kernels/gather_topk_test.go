package kernels

import (
	"slices"
	"strings"
	"testing"
)

// TestGatherTopK: the gather picks s[t, ids[t,k]] (0 for -1), the backward adds g into the
// chosen columns (repeated ids add up, onto what ds held), and bad ids or sizes are errors.
func TestGatherTopK(t *testing.T) {
	s := []float32{1, 2, 3, 4, 5, 6} // [2,3]
	ids := []int32{2, -1, 0, 0}      // [2,2]
	out := []float32{9, 9, 9, 9}
	if err := GatherTopK(out, s, ids, 3, 2); err != nil {
		t.Fatal(err)
	}
	if want := []float32{3, 0, 4, 4}; !slices.Equal(out, want) {
		t.Errorf("GatherTopK = %v, want %v", out, want)
	}
	ds := []float64{1, 0, 0, 0, 0, 0}
	if err := GatherTopKBackward(ds, []float64{1, 2, 3, 4}, ids, 3, 2); err != nil {
		t.Fatal(err)
	}
	if want := []float64{1, 0, 1, 7, 0, 0}; !slices.Equal(ds, want) {
		t.Errorf("GatherTopKBackward = %v, want %v", ds, want)
	}
	if err := GatherTopK(out, s, []int32{3, 0, 0, 0}, 3, 2); err == nil || !strings.Contains(err.Error(), "ids[0,0] = 3") {
		t.Errorf("id 3 of E=3: err %v", err)
	}
	if err := GatherTopKBackward(ds, []float64{1}, ids, 3, 2); err == nil {
		t.Error("short g: no error")
	}
	if err := GatherTopK(out[:0], s, nil, 3, 0); err != nil {
		t.Errorf("no slots: %v", err)
	}
}
