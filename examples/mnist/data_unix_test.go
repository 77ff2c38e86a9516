//go:build unix

package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/regfile/regfiletest"
)

// TestMNISTSpecialFiles: an MNIST file in -data that is not a regular file is an error that
// says so, and the load returns: a named pipe used to block it forever.
func TestMNISTSpecialFiles(t *testing.T) {
	for _, p := range regfiletest.Special(t, t.TempDir(), ".gz") {
		dir := t.TempDir()
		if err := os.Symlink(p.Path, filepath.Join(dir, "train-images-idx3-ubyte.gz")); err != nil {
			t.Fatal(err)
		}
		err := regfiletest.Within(t, p.Name, func() error {
			_, _, err := loadMNIST(dir, 0, 0)
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "train-images-idx3-ubyte.gz: not a regular file") {
			t.Errorf("%s: got %v, want an error naming the file and \"not a regular file\"", p.Name, err)
		}
	}
}
