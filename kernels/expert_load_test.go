package kernels

import (
	"slices"
	"strings"
	"testing"
)

// TestExpertLoad: per-sequence counts with -1 skipped, no tokens, and bad ids or sizes as
// errors.
func TestExpertLoad(t *testing.T) {
	ids := []int32{0, 1, 1, -1, 2, 2, 0, 2} // T=4, K=2, two sequences of 2 tokens
	load := make([]float32, 2*3)
	if err := ExpertLoad(load, ids, 2, 3, 2); err != nil {
		t.Fatal(err)
	}
	if want := []float32{1, 2, 0, 1, 0, 3}; !slices.Equal(load, want) {
		t.Errorf("ExpertLoad = %v, want %v", load, want)
	}
	empty := []float64{7, 7, 7}
	if err := ExpertLoad(empty, nil, 2, 3, 1); err != nil || !slices.Equal(empty, []float64{0, 0, 0}) {
		t.Errorf("no tokens: %v, %v", empty, err)
	}
	if err := ExpertLoad(load, []int32{0, 3, 0, 0, 0, 0, 0, 0}, 2, 3, 2); err == nil || !strings.Contains(err.Error(), "ids[0,1] = 3 is out of range") {
		t.Errorf("id 3 of E=3: err %v", err)
	}
	if err := ExpertLoad(load, ids, 2, 3, 3); err == nil {
		t.Error("4 tokens in 3 sequences: no error")
	}
	if err := ExpertLoad(empty, nil, 0, 3, 1); err == nil || !strings.Contains(err.Error(), "K=0 slots per token, want K >= 1") {
		t.Errorf("K=0: err %v", err) // it gave zero counts
	}
}
