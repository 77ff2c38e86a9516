package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"

	"github.com/gomoe/gomoe/examples/internal/trainutil"
)

// The vocabulary: tab, newline, printable ASCII, and one symbol for every
// other byte (UTF-8 in comments and strings, carriage returns and so on).
const (
	vocab    = 2 + 95 + 1
	otherSym = vocab - 1
)

// symbol maps a byte to its symbol id.
func symbol(b byte) uint8 {
	switch {
	case b == '\t':
		return 0
	case b == '\n':
		return 1
	case b >= 32 && b <= 126:
		return b - 32 + 2
	}
	return otherSym
}

// char maps a symbol id back to a printable byte ('·' stands for "other").
func char(s uint8) string {
	switch {
	case s == 0:
		return "\t"
	case s == 1:
		return "\n"
	case s < otherSym:
		return string(rune(s - 2 + 32))
	}
	return "·"
}

func encode(b []byte) []uint8 {
	out := make([]uint8, len(b))
	for i, c := range b {
		out[i] = symbol(c)
	}
	return out
}

// corpus is the training and held-out text as symbol streams, files
// concatenated.
type corpus struct {
	root              string
	train, held       []uint8
	trainFiles, heldN int
}

// fingerprint is trainutil.Fingerprint of the training and held-out text: a resumed run must
// train and evaluate on the saved run's.
func (c *corpus) fingerprint() string {
	return trainutil.Fingerprint(func(w io.Writer) {
		binary.Write(w, binary.LittleEndian, int64(len(c.train))) // a hash's Write never fails
		w.Write(c.train)
		w.Write(c.held)
	})
}

// goroot returns the Go installation's root folder.
func goroot() (string, error) {
	if out, err := exec.Command("go", "env", "GOROOT").Output(); err == nil {
		if r := strings.TrimSpace(string(out)); r != "" {
			return r, nil
		}
	}
	if r := runtime.GOROOT(); r != "" { //nolint:staticcheck // fallback when no go command is on PATH
		return r, nil
	}
	return "", fmt.Errorf("cannot find GOROOT: no go command and no GOROOT in the binary")
}

// heldOut reports whether a file belongs to the held-out set: one file in
// ten, chosen by a hash of its path so that the split does not depend on the
// seed or on which files are sampled.
func heldOut(rel string) bool {
	h := fnv.New32a()
	h.Write([]byte(rel))
	return h.Sum32()%10 == 0
}

// maxSourceBytes is the largest source file loadCorpus reads.
const maxSourceBytes = 16 << 20

// loadCorpus reads the Go standard library's hand-written, non-test source files under
// root/src (root "" = this Go installation), splits them into training and
// held-out files, and keeps, in a seed-dependent random order, files until
// trainBytes and heldBytes are reached. Only regular files are read (a named pipe or a link
// to a device under a -goroot would block or never end), and none larger than
// maxSourceBytes (no hand-written source is: the largest in Go 1.26, generated, is 3 MB).
func loadCorpus(root string, trainBytes, heldBytes int, seed uint64) (*corpus, error) {
	if root == "" {
		var err error
		if root, err = goroot(); err != nil {
			return nil, err
		}
	}
	src := filepath.Join(root, "src")
	var files []string
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); n == "testdata" || n == "vendor" {
				return filepath.SkipDir
			}
			return nil
		}
		if n := d.Name(); strings.HasSuffix(n, ".go") && !strings.HasSuffix(n, "_test.go") && d.Type().IsRegular() {
			if info, err := d.Info(); err != nil || info.Size() > maxSourceBytes {
				return nil // gone since the listing, or too large to be hand-written
			}
			rel, err := filepath.Rel(src, path)
			if err != nil {
				return err
			}
			files = append(files, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read Go sources under %s: %w", src, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("no .go files under %s", src)
	}
	sort.Strings(files)
	rng := rand.New(rand.NewPCG(seed, 3))
	rng.Shuffle(len(files), func(i, j int) { files[i], files[j] = files[j], files[i] })
	c := &corpus{root: root}
	for _, f := range files {
		held := heldOut(f)
		if (held && len(c.held) >= heldBytes) || (!held && len(c.train) >= trainBytes) {
			if len(c.held) >= heldBytes && len(c.train) >= trainBytes {
				break
			}
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, filepath.FromSlash(f)))
		if err != nil {
			return nil, err
		}
		if generated(b) {
			continue
		}
		if held {
			c.held = append(c.held, encode(b)...)
			c.heldN++
		} else {
			c.train = append(c.train, encode(b)...)
			c.trainFiles++
		}
	}
	if len(c.train) == 0 || len(c.held) == 0 {
		return nil, fmt.Errorf("corpus under %s too small: %d training and %d held-out bytes", src, len(c.train), len(c.held))
	}
	return c, nil
}

// generatedRE matches the line that marks a generated Go file
// (https://go.dev/s/generatedcode).
var generatedRE = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

// generated reports whether a source file is machine-generated (tables of
// constants, syscall stubs); the corpus keeps hand-written code only.
func generated(src []byte) bool {
	// The marker must appear before the package clause.
	if bytes.HasPrefix(src, []byte("package ")) {
		return false
	}
	if i := bytes.Index(src, []byte("\npackage ")); i >= 0 {
		src = src[:i+1]
	}
	return generatedRE.Match(src)
}

// ngram holds the unigram and bigram baselines estimated on the training
// text.
type ngram struct {
	uni []float64        // P(c), add-one smoothed
	bi  [][vocab]float64 // P(c | p), Dirichlet-smoothed towards uni (β = 1)
}

func newNgram(train []uint8) *ngram {
	var u [vocab]float64
	var b [vocab][vocab]float64
	for i, s := range train {
		u[s]++
		if i > 0 {
			b[train[i-1]][s]++
		}
	}
	n := &ngram{uni: make([]float64, vocab), bi: make([][vocab]float64, vocab)}
	total := float64(len(train)) + vocab
	for c := range u {
		n.uni[c] = (u[c] + 1) / total
	}
	const beta = 1.0
	for p := range b {
		rowSum := 0.0
		for _, v := range b[p] {
			rowSum += v
		}
		for c := range b[p] {
			n.bi[p][c] = (b[p][c] + beta*n.uni[c]) / (rowSum + beta)
		}
	}
	return n
}

// bits returns the unigram and bigram bits per character of text[from:to],
// each symbol predicted from the one before it.
func (n *ngram) bits(text []uint8, from, to int) (uni, bi float64) {
	for i := from; i < to; i++ {
		uni -= math.Log2(n.uni[text[i]])
		bi -= math.Log2(n.bi[text[i-1]][text[i]])
	}
	k := float64(to - from)
	return uni / k, bi / k
}
