//go:build unix

package hf

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadConfigSpecialFiles: ReadConfig reads a regular file of at most maxConfigBytes (16 MiB) and
// returns an error for anything else: a large file was read whole (a checkpoint named by
// mistake, of tens of GB, died allocating), a named pipe blocked forever, /dev/zero was read
// until the process ran out of memory.
func TestReadConfigSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	big, fifo, zero := filepath.Join(dir, "big.json"), filepath.Join(dir, "fifo.json"), filepath.Join(dir, "zero.json")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(16<<20 + 1); err != nil { // sparse, one byte over maxConfigBytes
		t.Fatal(err)
	}
	f.Close()
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	// In this order: before the fix the pipe stopped the test before /dev/zero ate the memory.
	for _, c := range []struct {
		name, path, err string
	}{
		{"larger than a config", big, "larger than 16777216 bytes"},
		{"named pipe", fifo, "not a regular file (mode p"},
		{"link to /dev/zero", zero, "not a regular file (mode D"},
	} {
		done := make(chan error, 1)
		go func() { _, err := ReadConfig(c.path); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), "gomoe: hf: config: "+c.path+": ") {
				t.Errorf("%s: got %v, want an error naming the path and containing %q", c.name, err, c.err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ReadConfig still reading after 10 s", c.name)
		}
	}
}
