//go:build unix

package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestWriteUmask: a new file's mode follows the umask, as os.Create's does, and a replaced
// file keeps its permissions, as with os.WriteFile (both were 0644 under every umask, so a
// checkpoint written under umask 077, or made private by chmod, was readable by everyone).
func TestWriteUmask(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	for _, c := range []struct {
		umask int
		want  os.FileMode
	}{{0o022, 0o644}, {0o077, 0o600}, {0o002, 0o664}, {0, 0o666}} {
		syscall.Umask(c.umask)
		path := filepath.Join(dir, fmt.Sprintf("f%o", c.umask))
		if err := Write(path, func(w io.Writer) error { _, err := io.WriteString(w, "x"); return err }); err != nil {
			t.Fatalf("umask %#o: %v", c.umask, err)
		}
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := st.Mode().Perm(); got != c.want {
			t.Errorf("umask %#o: mode %v, want %v", c.umask, got, c.want)
		}
	}

	// Replacing a file keeps its permissions, whatever the umask.
	syscall.Umask(0o022)
	path := filepath.Join(dir, "private")
	if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o640 {
		t.Errorf("replaced file: mode %v, want 0640 (the old file's)", st.Mode().Perm())
	}
}
