package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/hostmem"
)

// writeIDX writes a gzip-compressed IDX file: the big-endian header words, then data.
func writeIDX(t *testing.T, path string, header []int32, data []byte) {
	t.Helper()
	var b bytes.Buffer
	z := gzip.NewWriter(&b)
	if err := binary.Write(z, binary.BigEndian, header); err != nil {
		t.Fatal(err)
	}
	if _, err := z.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := z.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBadMNISTFiles: MNIST files whose headers GoMNIST would trust blindly (a negative or
// impossible count, other image sizes, another magic number) are errors, not a panic or an
// unbounded allocation; two good images load.
func TestBadMNISTFiles(t *testing.T) {
	img := func(n int32) ([]int32, []byte) { return []int32{0x803, n, 28, 28}, make([]byte, 2*pixels) }
	lab := func(n int32) ([]int32, []byte) { return []int32{0x801, n}, []byte{3, 7} }
	write := func(dir string, trainImg func() ([]int32, []byte)) {
		h, d := trainImg()
		writeIDX(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), h, d)
		for _, name := range []string{"train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"} {
			h, d := lab(2)
			writeIDX(t, filepath.Join(dir, name), h, d)
		}
		h, d = img(2)
		writeIDX(t, filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), h, d)
	}
	good := t.TempDir()
	write(good, func() ([]int32, []byte) { return img(2) })
	tr, te, err := loadMNIST(good, 0, 0)
	if err != nil {
		t.Fatalf("good files: %v", err)
	}
	if tr.len() != 2 || te.len() != 2 || tr.y[1] != 7 {
		t.Errorf("good files: %d and %d images, labels %v", tr.len(), te.len(), tr.y)
	}
	for _, c := range []struct {
		name string
		hdr  func() ([]int32, []byte)
		want string
	}{
		{"negative count", func() ([]int32, []byte) { return img(-1) }, "claims -1 items"},
		{"huge count", func() ([]int32, []byte) { return img(1 << 30) }, "claims 1073741824 items"},
		{"other size", func() ([]int32, []byte) { return []int32{0x803, 2, 0, 28}, make([]byte, 2*pixels) }, "images of 0×28 pixels"},
		{"negative size", func() ([]int32, []byte) { return []int32{0x803, 2, -28, 28}, make([]byte, 2*pixels) }, "images of -28×28 pixels"},
		{"label magic", func() ([]int32, []byte) { return []int32{0x801, 2, 28, 28}, nil }, "magic number 0x801, want 0x803"},
		{"short header", func() ([]int32, []byte) { return []int32{0x803}, nil }, "IDX header"},
	} {
		dir := t.TempDir()
		write(dir, c.hdr)
		if _, _, err := loadMNIST(dir, 0, 0); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.want)
		}
	}
	// A count the file could hold (19 KB of incompressible bytes may inflate to 25000 images)
	// whose images do not fit in memory: GoMNIST and convert would allocate about 99 MB, with
	// no check, where this process may use 16 MiB.
	defer hostmem.SetLimit(hostmem.SetLimit(16 << 20))
	dir := t.TempDir()
	noise := make([]byte, 19<<10)
	rand.NewChaCha8([32]byte{1}).Read(noise)
	write(dir, func() ([]int32, []byte) { return []int32{0x803, 25000, 28, 28}, noise })
	if _, _, err := loadMNIST(dir, 0, 0); err == nil || !strings.Contains(err.Error(), "25002 MNIST images need 9.863e+07 bytes, more than the 16777216 bytes") {
		t.Errorf("images beyond memory: got %v, want the memory error", err)
	}
}
