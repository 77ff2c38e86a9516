//go:build unix

package safetensors

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpenSpecialFiles: a path that is not a regular file is an error that says so, and Open
// returns: a named pipe used to block Open forever (and with it train.LoadCheckpoint).
func TestOpenSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	fifo, zero := filepath.Join(dir, "fifo.safetensors"), filepath.Join(dir, "zero.safetensors")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
	}{
		{"named pipe", fifo},
		{"link to a device", zero},
		{"folder", dir},
	} {
		done := make(chan error, 1)
		go func() {
			ts, err := Open(c.path)
			ts.Close()
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not a safetensors file: "+c.path+": not a regular file") {
				t.Errorf("%s: got %v, want an error naming the path and \"not a regular file\"", c.name, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: Open still blocked after 10 s", c.name)
		}
	}
}
