//go:build unix

// Package regfiletest makes the paths that are not regular files (a named pipe with no writer,
// a link to /dev/zero, a folder) for the tests of the loaders that must refuse them, and runs
// a load under a deadline so that a load that blocks fails its test instead of hanging it.
package regfiletest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Path is one path that is not a regular file, and what it is.
type Path struct {
	Name, Path string
}

// Special makes, in the folder dir, a named pipe with no writer (opening it would block), a
// link to /dev/zero (reading it would never end) and a folder, and returns them in that order.
// Names end in ext (".json", ".safetensors").
func Special(t testing.TB, dir, ext string) []Path {
	t.Helper()
	fifo, zero, sub := filepath.Join(dir, "fifo"+ext), filepath.Join(dir, "zero"+ext), filepath.Join(dir, "folder"+ext)
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	return []Path{{"named pipe", fifo}, {"link to /dev/zero", zero}, {"folder", sub}}
}

// Within runs load and returns its error; if load has not returned after 10 s (an open that
// blocks, a read that never ends), it fails t at once, naming what.
func Within(t testing.TB, what string, load func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- load() }()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: still running after 10 s", what)
		return nil
	}
}
