package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	boom := errors.New("boom")
	// The mode os.WriteFile gives a new file here (0666 less the umask).
	probe := filepath.Join(t.TempDir(), "probe")
	if err := os.WriteFile(probe, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(probe)
	if err != nil {
		t.Fatal(err)
	}
	newMode := st.Mode().Perm()
	for _, c := range []struct {
		name    string
		write   func(io.Writer) error
		wantErr error
		want    string // the file afterwards
	}{
		{"new file", func(w io.Writer) error { _, err := io.WriteString(w, "first"); return err }, nil, "first"},
		{"replaces it", func(w io.Writer) error { _, err := io.WriteString(w, "second, longer"); return err }, nil, "second, longer"},
		{"a failed write leaves the old file", func(w io.Writer) error { io.WriteString(w, "half"); return boom }, boom, "second, longer"},
		{"empty", func(w io.Writer) error { return nil }, nil, ""},
	} {
		err := Write(path, c.write)
		if !errors.Is(err, c.wantErr) {
			t.Fatalf("%s: error %v, want %v", c.name, err, c.wantErr)
		}
		got, rerr := os.ReadFile(path)
		if rerr != nil || string(got) != c.want {
			t.Fatalf("%s: file holds %q (%v), want %q", c.name, got, rerr, c.want)
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != newMode {
			t.Errorf("%s: mode %v, want %v (os.WriteFile's for a new file)", c.name, st.Mode().Perm(), newMode)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 1 {
			t.Errorf("%s: the folder holds %v, want only the file (no temporary left)", c.name, ents)
		}
	}
	if err := Write(filepath.Join(dir, "no such folder", "x"), func(io.Writer) error { return nil }); err == nil {
		t.Error("no error for a path in a missing folder")
	}
}

// TestWritePanicLeavesNoTemporary: a panic in write leaves the old file and no temporary
// file (it left .out.bin.tmp… behind, open), and the panic goes on to the caller.
func TestWritePanicLeavesNoTemporary(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.bin")
	if err := os.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("recovered %v, want the panic \"boom\"", r)
			}
		}()
		_ = Write(path, func(w io.Writer) error { io.WriteString(w, "half"); panic("boom") })
	}()
	if got, _ := os.ReadFile(path); string(got) != "old" {
		t.Errorf("file holds %q, want \"old\"", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		names := []string{}
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("the folder holds %v, want only the file (no temporary left)", names)
	}
}
