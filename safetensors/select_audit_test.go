package safetensors

import (
	"testing"
)

// TestSelectNilKeep: Select(nil) must not panic (docs/errors.md: no panic escapes).
func TestSelectNilKeep(t *testing.T) {
	ts, err := Parse(rawFile(`{"a":{"dtype":"F16","shape":[1],"data_offsets":[0,2]}}`, le(uint16(1))))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("Select(nil) panicked: %v", r)
		}
	}()
	if got := ts.Select(nil).Names(); len(got) != 1 {
		t.Errorf("Select(nil) kept %v, want every tensor", got)
	}
}
