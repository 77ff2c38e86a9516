package train

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestProgressPlain: off a terminal the report is plain lines, one per Add with Interval 0,
// only the last with a long Interval, and none without a writer; log lines go to the log.
func TestProgressPlain(t *testing.T) {
	tests := []struct {
		name     string
		interval time.Duration
		lines    int
	}{
		{"every add", 0, 4},
		{"only the end", time.Hour, 1},
	}
	for _, tt := range tests {
		var out, log bytes.Buffer
		p := NewProgress(&out, &log, 100, "img", "train")
		p.Interval = tt.interval
		for i := 0; i < 4; i++ {
			p.Add(25, "loss 0.5000")
		}
		p.Logf("epoch %d", 1)
		p.Finish()
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != tt.lines {
			t.Fatalf("%s: %d lines, want %d:\n%s", tt.name, len(lines), tt.lines, out.String())
		}
		last := lines[len(lines)-1]
		if !regexp.MustCompile(`^train  100/100 img \(100\.0%\)  loss 0\.5000  [0-9]+ img/s  elapsed [0-9.]+[mµn]?s$`).MatchString(last) {
			t.Errorf("%s: last line %q", tt.name, last)
		}
		if strings.ContainsAny(out.String(), "\r\x1b") {
			t.Errorf("%s: control characters in plain output %q", tt.name, out.String())
		}
		if log.String() != "epoch 1\n" {
			t.Errorf("%s: log %q", tt.name, log.String())
		}
	}
	// A negative count does not take the count back.
	var out bytes.Buffer
	p := NewProgress(&out, nil, 100, "img", "train")
	p.Interval = 0
	p.Add(30, "a")
	p.Add(-20, "b")
	if lines := strings.Split(strings.TrimSpace(out.String()), "\n"); !strings.HasPrefix(lines[len(lines)-1], "train  30/100 img") {
		t.Errorf("after Add(30), Add(-20): %q, want 30/100", lines[len(lines)-1])
	}
	// Nor does a count past math.MaxInt64: it stops there (it wrapped around to -2).
	out.Reset()
	p = NewProgress(&out, nil, 100, "img", "train")
	p.Interval = 0
	for _, n := range []int{math.MaxInt, math.MaxInt, 5, -1} {
		p.Add(n, "x")
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "train  9223372036854775807/100 img ") {
			t.Errorf("after Add(%d): %q, want 9223372036854775807/100", n, last)
		}
	}
	var log bytes.Buffer
	p = NewProgress(nil, &log, 10, "chr", "train")
	p.Add(10, "x")
	p.Logf("only the log")
	if log.String() != "only the log\n" {
		t.Errorf("no writer: log %q", log.String())
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || IsTerminal(&bytes.Buffer{}) || IsTerminal(nil) {
		t.Error("a file, a buffer or nil counted as a terminal")
	}
}

// TestProgressTimeLeftBeyondDuration: a time left beyond what a time.Duration holds (about 292
// years: a slow start of a long run, 1000 of 10¹² items in an hour) is the longest Duration.
// The float64 nanoseconds were converted to a Duration as they were, which overflowed and
// printed "left -2562047h47m16.854775808s".
func TestProgressTimeLeftBeyondDuration(t *testing.T) {
	var out bytes.Buffer
	p := NewProgress(&out, nil, 1e12, "chr", "train")
	p.Interval = 0
	p.start = time.Now().Add(-time.Hour)
	p.Add(1000, "")
	if line := out.String(); !strings.HasSuffix(line, "  left 2562047h47m16.854775807s\n") {
		t.Errorf("line %q, want it to end with the longest Duration left", line)
	}
}
