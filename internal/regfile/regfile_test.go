package regfile

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadFileLimits: a limit of math.MaxInt64 reads the whole file (limit+1 wrapped around to
// a negative count, and the read returned nothing, with no error); a negative limit is an error.
func TestReadFileLimits(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("hello"), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := ReadFile(p, math.MaxInt64); err != nil || string(b) != "hello" {
		t.Errorf("ReadFile(MaxInt64) = %q, %v; want \"hello\"", b, err)
	}
	if b, err := ReadFile(p, 5); err != nil || string(b) != "hello" {
		t.Errorf("ReadFile(5) = %q, %v; want \"hello\"", b, err)
	}
	if _, err := ReadFile(p, -1); err == nil || !strings.Contains(err.Error(), "a read limit of -1 bytes") {
		t.Errorf("ReadFile(-1): %v, want an error", err)
	}
}
