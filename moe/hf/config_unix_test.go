//go:build unix

package hf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/regfile/regfiletest"
)

// TestReadConfigSpecialFiles: ReadConfig reads a regular file of at most maxConfigBytes (16 MiB)
// and returns an error for anything else: a large file was read whole (a checkpoint named by
// mistake, of tens of GB, died allocating), a named pipe blocked forever, /dev/zero was read
// until the process ran out of memory.
func TestReadConfigSpecialFiles(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big.json")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(16<<20 + 1); err != nil { // sparse, one byte over maxConfigBytes
		t.Fatal(err)
	}
	f.Close()
	cases := []regfiletest.Path{{Name: "larger than a config", Path: big}}
	for _, c := range append(cases, regfiletest.Special(t, t.TempDir(), ".json")...) {
		want := "not a regular file (mode "
		if c.Path == big {
			want = "larger than 16777216 bytes"
		}
		err := regfiletest.Within(t, c.Name, func() error { _, err := ReadConfig(c.Path); return err })
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "gomoe: hf: config: "+c.Path+": ") {
			t.Errorf("%s: got %v, want an error naming the path and containing %q", c.Name, err, want)
		}
	}
}
