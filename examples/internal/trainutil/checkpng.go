package trainutil

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// CheckPNG returns an error unless the file at path exists, starts with the
// PNG signature and is at least 2000 bytes long (a plot, not an empty image).
// The examples' tests use it on the plots they write.
func CheckPNG(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("plot not written: %v", err)
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 2000 {
		return fmt.Errorf("%s is not a plausible PNG (%d bytes)", path, len(b))
	}
	return nil
}

// CheckPNGs marks t failed (t.Error) for each of the files names in dir that CheckPNG rejects.
func CheckPNGs(t testing.TB, dir string, names ...string) {
	t.Helper()
	for _, name := range names {
		if err := CheckPNG(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
}
