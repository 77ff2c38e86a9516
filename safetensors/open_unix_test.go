//go:build unix

package safetensors

import (
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/regfile/regfiletest"
)

// TestOpenSpecialFiles: a path that is not a regular file is an error that says so, and Open
// returns: a named pipe used to block Open forever (and with it train.LoadCheckpoint).
func TestOpenSpecialFiles(t *testing.T) {
	for _, p := range regfiletest.Special(t, t.TempDir(), ".safetensors") {
		err := regfiletest.Within(t, p.Name, func() error {
			ts, err := Open(p.Path)
			ts.Close()
			return err
		})
		if err == nil || !strings.Contains(err.Error(), "not a safetensors file: "+p.Path+": not a regular file") {
			t.Errorf("%s: got %v, want an error naming the path and \"not a regular file\"", p.Name, err)
		}
	}
}
