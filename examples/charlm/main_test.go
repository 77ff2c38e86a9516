package main

import (
	"bytes"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smallConfig is a few-second run on a small slice of the Go sources.
func smallConfig(t *testing.T) config {
	cfg := defaultConfig()
	cfg.TrainMB, cfg.HeldMB = 0.3, 0.05
	cfg.EvalChars = 3000
	cfg.Steps = 120
	cfg.Batch = 32
	cfg.EvalBatch = 500
	cfg.EvalEvery = 60
	cfg.Context = 8
	cfg.Embed = 8
	cfg.Block.Hidden, cfg.Block.FFN = 32, 32
	cfg.LogEvery = 30
	cfg.Sample = 40
	cfg.LR = 5e-3
	cfg.Out = filepath.Join(t.TempDir(), "out")
	return cfg
}

func mean(v []float64) float64 {
	s := 0.0
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func TestSmoke(t *testing.T) {
	cfg := smallConfig(t)
	var out bytes.Buffer
	res, err := run(cfg, &out, nil)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	if len(res.StepLoss) != cfg.Steps {
		t.Fatalf("got %d step losses, want %d", len(res.StepLoss), cfg.Steps)
	}
	first, last := mean(res.StepLoss[:10]), mean(res.StepLoss[len(res.StepLoss)-10:])
	if !(last < 0.8*first) {
		t.Errorf("loss did not fall: first 10 steps %.4f, last 10 steps %.4f nats", first, last)
	}
	// A uniform guess over the vocabulary costs log2(vocab) bits.
	if !(res.BPC > 0 && res.BPC < math.Log2(vocab)) {
		t.Errorf("held-out bits/char %v, want in (0, %.2f)", res.BPC, math.Log2(vocab))
	}
	if !(res.Bigram < res.Unigram) {
		t.Errorf("bigram baseline %.3f not below unigram %.3f", res.Bigram, res.Unigram)
	}
	if n := len([]rune(res.Sample)); n != cfg.Sample {
		t.Errorf("sample has %d characters, want %d", n, cfg.Sample)
	}
	for _, name := range []string{"loss.png", "experts.png", "experts-block2.png"} {
		checkPNG(t, filepath.Join(cfg.Out, name))
	}
	for _, want := range []string{"block 1  expert load %:", "block 2  expert load %:", "unigram", "bigram", "sample", "wrote"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func checkPNG(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("plot not written: %v", err)
		return
	}
	if !bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) || len(b) < 2000 {
		t.Errorf("%s is not a plausible PNG (%d bytes)", path, len(b))
	}
}

func TestBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config)
		want string
	}{
		{"gpu", func(c *config) { c.Device = "cuda" }, "device"},
		{"layers", func(c *config) { c.Layers = 0 }, "layers"},
		{"context", func(c *config) { c.Context = 0 }, "context"},
		{"steps", func(c *config) { c.Steps = 0 }, "steps"},
		{"temp", func(c *config) { c.Temp = 0 }, "temperature"},
		{"topk", func(c *config) { c.Block.TopK = 9 }, "TopK"},
		{"capacity", func(c *config) { c.Block.Capacity = -1 }, "CapacityFactor"},
		{"goroot", func(c *config) { c.GoRoot = filepath.Join(os.TempDir(), "no-such-goroot") }, "no-such-goroot"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := smallConfig(t)
			tt.edit(&cfg)
			_, err := run(cfg, io.Discard, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got error %v, want one naming %q", err, tt.want)
			}
		})
	}
}

// TestNgram checks the baselines against probabilities worked out by hand.
func TestNgram(t *testing.T) {
	train := encode([]byte("abab"))
	n := newNgram(train)
	a, b, c := symbol('a'), symbol('b'), symbol('c')
	// Unigram, add-one over the vocabulary: counts a=2, b=2, 4 symbols.
	wantA := 3.0 / (4 + vocab)
	wantC := 1.0 / (4 + vocab)
	if !close(n.uni[a], wantA) || !close(n.uni[c], wantC) {
		t.Errorf("unigram P(a)=%v P(c)=%v, want %v %v", n.uni[a], n.uni[c], wantA, wantC)
	}
	// Bigram after 'a': "ab" twice, Dirichlet prior of weight 1 on the unigram.
	wantBA := (2 + n.uni[b]) / 3
	if !close(n.bi[a][b], wantBA) {
		t.Errorf("bigram P(b|a)=%v, want %v", n.bi[a][b], wantBA)
	}
	// After 'b': "ba" once.
	if want := (1 + n.uni[a]) / 2; !close(n.bi[b][a], want) {
		t.Errorf("bigram P(a|b)=%v, want %v", n.bi[b][a], want)
	}
	// Every bigram row is a distribution.
	for p := 0; p < vocab; p++ {
		s := 0.0
		for q := 0; q < vocab; q++ {
			s += n.bi[p][q]
		}
		if !close(s, 1) {
			t.Fatalf("bigram row %d sums to %v", p, s)
		}
	}
	text := encode([]byte("abc"))
	uni, bi := n.bits(text, 1, 3)
	wantUni := -(math.Log2(n.uni[b]) + math.Log2(n.uni[c])) / 2
	wantBi := -(math.Log2(n.bi[a][b]) + math.Log2(n.bi[b][c])) / 2
	if !close(uni, wantUni) || !close(bi, wantBi) {
		t.Errorf("bits = %v, %v; want %v, %v", uni, bi, wantUni, wantBi)
	}
}

func close(a, b float64) bool { return math.Abs(a-b) <= 1e-12*math.Max(1, math.Abs(b)) }

func TestSymbols(t *testing.T) {
	tests := []struct {
		in   byte
		want string
	}{
		{'\t', "\t"}, {'\n', "\n"}, {' ', " "}, {'a', "a"}, {'~', "~"}, {'\r', "·"}, {0xc3, "·"},
	}
	for _, tt := range tests {
		s := symbol(tt.in)
		if int(s) >= vocab {
			t.Fatalf("symbol(%q) = %d out of the vocabulary", tt.in, s)
		}
		if got := char(s); got != tt.want {
			t.Errorf("char(symbol(%q)) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestGenerated(t *testing.T) {
	tests := []struct {
		src  string
		want bool
	}{
		{"// Code generated by mkerrors; DO NOT EDIT.\n\npackage syscall\n", true},
		{"// Copyright 2009\n\n// Code generated by x. DO NOT EDIT.\n\npackage p\n", true},
		{"package p\n\n// Code generated by x. DO NOT EDIT.\n", false},
		{"// Code generated by hand, please edit.\npackage p\n", false},
		{"package p\n", false},
	}
	for _, tt := range tests {
		if got := generated([]byte(tt.src)); got != tt.want {
			t.Errorf("generated(%q) = %v, want %v", tt.src, got, tt.want)
		}
	}
}
