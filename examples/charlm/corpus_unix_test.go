//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestCorpusSkipsSpecialFiles: a -goroot whose sources include a named pipe, a link to
// /dev/zero and a file of more than maxSourceBytes (sparse) loads the regular sources only
// and returns: reading the pipe blocked forever, the link never ended, the large file was
// read whole.
func TestCorpusSkipsSpecialFiles(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "src", "p")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	want := 0
	for i := range 40 { // about one in ten files is held out: 40 give both sets some
		src := fmt.Sprintf("package p\n\nfunc F%d() int { return %d }\n", i, i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%02d.go", i)), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		want += len(src)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo.go"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/zero", filepath.Join(dir, "zero.go")); err != nil {
		t.Fatal(err)
	}
	big, err := os.Create(filepath.Join(dir, "big.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(maxSourceBytes + 1); err != nil {
		t.Fatal(err)
	}
	big.Close()
	type result struct {
		c   *corpus
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := loadCorpus(root, 1<<20, 1<<20, 1)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			t.Fatal(r.err)
		}
		if got := len(r.c.train) + len(r.c.held); got != want || r.c.trainFiles+r.c.heldN != 40 {
			t.Errorf("corpus of %d symbols from %d files, want the 40 regular sources' %d", got, r.c.trainFiles+r.c.heldN, want)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("loadCorpus still reading after 20 s")
	}
}
