package atomicfile

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestWritePanicLeavesNoTemporary: a panic in write leaves the old file and no temporary
// file (it left .out.bin.tmp… behind, open), and the panic goes on to the caller.
func TestWritePanicLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the panic \"boom\"", r)
			}
		}()
		_ = Write(path, func(w io.Writer) error { io.WriteString(w, "half"); panic("boom") })
	}()
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("file holds %q, want \"old\"", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the folder holds %v, want only the file (no temporary left)", names)
	}
}
