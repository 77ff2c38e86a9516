//go:build unix

package regfile

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/regfile/regfiletest"
)

// TestReadFile: a regular file of at most the limit is read whole; one a byte larger, a named
// pipe (which would block the open), a link to /dev/zero (which would never end the read), a
// folder and a missing path are errors naming the path, and none blocks.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	ok, big := filepath.Join(dir, "ok"), filepath.Join(dir, "big")
	if err := os.WriteFile(ok, []byte("12345678"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(big, []byte("123456789"), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := ReadFile(ok, 8)
	if err != nil || string(b) != "12345678" {
		t.Errorf("at the limit: %q, %v, want the file", b, err)
	}
	type bad struct {
		name, path string
		is         error // the error it wraps
		want       string
	}
	cases := []bad{
		{"a byte over the limit", big, ErrTooLarge, big + ": larger than 8 bytes"},
		{"missing", filepath.Join(dir, "none"), os.ErrNotExist, "no such file"},
	}
	for _, p := range regfiletest.Special(t, dir, "") {
		cases = append(cases, bad{p.Name, p.Path, ErrNotRegular, p.Path + ": not a regular file (mode "})
	}
	for _, c := range cases {
		err := regfiletest.Within(t, c.name, func() error { _, err := ReadFile(c.path, 8); return err })
		if !errors.Is(err, c.is) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error wrapping %v and containing %q", c.name, err, c.is, c.want)
		}
	}
}
