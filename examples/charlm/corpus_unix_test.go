//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/gomoe/gomoe/internal/regfile/regfiletest"
)

// TestCorpusSkipsSpecialFiles: a -goroot whose sources include a named pipe, a link to
// /dev/zero, a folder named like a source and a file of more than maxSourceBytes (sparse) loads the regular sources only
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
	regfiletest.Special(t, dir, ".go")
	big, err := os.Create(filepath.Join(dir, "big.go"))
	if err != nil {
		t.Fatal(err)
	}
	if err := big.Truncate(maxSourceBytes + 1); err != nil {
		t.Fatal(err)
	}
	big.Close()
	var c *corpus
	if err := regfiletest.Within(t, "loadCorpus", func() (err error) {
		c, err = loadCorpus(root, 1<<20, 1<<20, 1)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if got := len(c.train) + len(c.held); got != want || c.trainFiles+c.heldN != 40 {
		t.Errorf("corpus of %d symbols from %d files, want the 40 regular sources' %d", got, c.trainFiles+c.heldN, want)
	}
}
