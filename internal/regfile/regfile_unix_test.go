//go:build unix

package regfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReadFile: a regular file of at most the limit is read whole; one a byte larger, a named
// pipe (which would block the open), a link to /dev/zero (which would never end the read), a
// folder and a missing path are errors naming the path, and none blocks.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	ok, big, fifo, zero := filepath.Join(dir, "ok"), filepath.Join(dir, "big"), filepath.Join(dir, "fifo"), filepath.Join(dir, "zero")
	if err := os.WriteFile(ok, []byte("12345678"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, []byte("123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		is         error // nil: read; else the error it wraps
		want       string
	}{
		{"at the limit", ok, nil, ""},
		{"a byte over the limit", big, ErrTooLarge, big + ": larger than 8 bytes"},
		{"named pipe", fifo, ErrNotRegular, fifo + ": not a regular file (mode p"},
		{"link to /dev/zero", zero, ErrNotRegular, zero + ": not a regular file (mode D"},
		{"folder", dir, ErrNotRegular, dir + ": not a regular file (mode d"},
		{"missing", filepath.Join(dir, "none"), os.ErrNotExist, "no such file"},
	} {
		type result struct {
			b   []byte
			err error
		}
		done := make(chan result, 1)
		go func() { b, err := ReadFile(c.path, 8); done <- result{b, err} }()
		select {
		case r := <-done:
			if c.is == nil {
				if r.err != nil || string(r.b) != "12345678" {
					t.Errorf("%s: %q, %v, want the file", c.name, r.b, r.err)
				}
				continue
			}
			if !errors.Is(r.err, c.is) || !strings.Contains(r.err.Error(), c.want) {
				t.Errorf("%s: %v, want an error wrapping %v and containing %q", c.name, r.err, c.is, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: ReadFile still running after 10 s", c.name)
		}
	}
}
