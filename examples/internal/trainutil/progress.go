// Package trainutil holds the pieces that the gomoe example programs share: a
// progress bar, per-expert load logging, PNG plots and small graph helpers.
//
// It is internal to the examples; the API may change with them.
package trainutil

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"
)

// Progress is a terminal progress bar that shows the current loss, the
// throughput in items per second and the time left.
//
// Log lines written through Logf are printed above the bar without tearing it.
type Progress struct {
	bar   *progressbar.ProgressBar
	log   io.Writer
	start time.Time
	done  int64
	total int64
	unit  string
}

// NewProgress returns a progress bar drawn on w for total items (for example
// images or characters) that are counted as unit. Log lines go to log.
// A nil w hides the bar; a nil log discards log lines.
func NewProgress(w, log io.Writer, total int64, unit, desc string) *Progress {
	if log == nil {
		log = io.Discard
	}
	p := &Progress{log: log, start: time.Now(), total: total, unit: unit}
	if w == nil {
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

// Add advances the bar by n items and shows loss in its description.
func (p *Progress) Add(n int, desc string) {
	p.done += int64(n)
	if p.bar == nil {
		return
	}
	p.bar.Describe(desc)
	_ = p.bar.Add(n)
}

// Rate returns the average throughput so far in items per second.
func (p *Progress) Rate() float64 {
	s := time.Since(p.start).Seconds()
	if s <= 0 {
		return 0
	}
	return float64(p.done) / s
}

// Elapsed returns the time since the bar was created.
func (p *Progress) Elapsed() time.Duration { return time.Since(p.start) }

// Logf prints one line above the bar.
func (p *Progress) Logf(format string, args ...any) {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.log, format+"\n", args...)
}

// Finish completes the bar.
func (p *Progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish()
	}
}
