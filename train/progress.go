package train

import (
	"fmt"
	"io"
	"math"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Progress reports a training run's progress: the items done (images, characters) out of
// the total, the current loss, the throughput and the time left. On a terminal it draws a
// bar (github.com/schollz/progressbar) that log lines written with Logf do not tear;
// anywhere else (a file, a pipe, CI's log) it prints a plain line at most every Interval,
// so a log has no control characters and no thousand redraws:
//
//	train  1280/60000 img (2.1%)  loss 0.4123  2840 img/s  elapsed 0.5s  left 20.7s
type Progress struct {
	// Interval is the least time between two plain lines (NewProgress: 10 s; 0: a line at
	// every Add). A terminal's bar redraws at most every 100 ms.
	Interval time.Duration

	bar   *progressbar.ProgressBar
	w     io.Writer // plain lines (nil with a bar or no output)
	log   io.Writer
	start time.Time
	last  time.Time
	done  int64
	total int64
	unit  string
	desc  string
}

// NewProgress returns a progress report on w for total items counted as unit (for example
// "img"), labelled desc. It draws a bar when w is a terminal (an *os.File for which
// golang.org/x/term.IsTerminal holds), prints plain lines otherwise, and nothing when w is
// nil. Log lines (Logf) go to log (nil: discarded).
func NewProgress(w, log io.Writer, total int64, unit, desc string) *Progress {
	if log == nil {
		log = io.Discard
	}
	now := time.Now()
	p := &Progress{Interval: 10 * time.Second, log: log, start: now, last: now, total: total, unit: unit, desc: desc}
	if w == nil {
		return p
	}
	if !IsTerminal(w) {
		p.w = w
		return p
	}
	p.bar = progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionShowIts(),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetWidth(24),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
	)
	return p
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && f != nil && term.IsTerminal(int(f.Fd()))
}

// Add advances the report by n items; status (for example "loss 0.4123") is shown beside
// the count. A negative n counts as 0, and the count stops at math.MaxInt64 (it wrapped
// around to negative): the count never goes back.
func (p *Progress) Add(n int, status string) {
	add := min(int64(max(n, 0)), math.MaxInt64-p.done)
	p.done += add
	if p.bar != nil {
		p.bar.Describe(p.desc + " " + status)
		_ = p.bar.Add64(add)
		return
	}
	if p.w == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.last) < p.Interval && p.done < p.total {
		return
	}
	p.last = now
	p.line(status, now)
}

func (p *Progress) line(status string, now time.Time) {
	el := now.Sub(p.start)
	pct, left := 0.0, ""
	if p.total > 0 {
		pct = 100 * float64(p.done) / float64(p.total)
	}
	if p.done > 0 && p.total > p.done {
		// At most the longest Duration (about 292 years): converting a larger float64 gave a
		// negative one.
		rem := time.Duration(math.MaxInt64)
		if ns := float64(el) * float64(p.total-p.done) / float64(p.done); ns < math.MaxInt64 {
			rem = time.Duration(ns)
		}
		left = "  left " + rem.Round(100*time.Millisecond).String()
	}
	if status != "" {
		status = "  " + status
	}
	fmt.Fprintf(p.w, "%s  %d/%d %s (%.1f%%)%s  %.0f %s/s  elapsed %s%s\n", p.desc, p.done, p.total, p.unit, pct,
		status, p.rate(el), p.unit, el.Round(100*time.Millisecond), left)
}

func (p *Progress) rate(el time.Duration) float64 {
	if el <= 0 {
		return 0
	}
	return float64(p.done) / el.Seconds()
}

// Rate returns the average throughput so far in items per second.
func (p *Progress) Rate() float64 { return p.rate(time.Since(p.start)) }

// Elapsed returns the time since NewProgress.
func (p *Progress) Elapsed() time.Duration { return time.Since(p.start) }

// Logf prints one line to the log writer (above the bar on a terminal).
func (p *Progress) Logf(format string, args ...any) {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.log, format+"\n", args...)
}

// Finish completes the bar (on a terminal); plain output needs nothing more, as the last Add
// prints the final line.
func (p *Progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
