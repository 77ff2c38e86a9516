package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/gomoe/gomoe/internal/hostmem"
)

// LoadTracker accumulates the number of routed token slots per expert over training (the
// moe layer's Output.Counts, read each step) and keeps one snapshot per logging window, for
// logs and plots. Imbalance gives the max/mean ratio of the load: 1 is perfectly balanced.
type LoadTracker struct {
	experts int
	window  []float64 // counts since the last snapshot
	total   []float64 // counts over the whole run
	slots   float64   // (token, expert) pairs asked for since the last snapshot
	kept    float64   // of which an expert processed

	dropped, asked float64 // over the whole run

	// Steps holds the step at which each snapshot was taken.
	Steps []float64
	// Frac holds, per snapshot, each expert's share of the token slots
	// routed during that window (the shares sum to 1 unless nothing was routed).
	Frac [][]float64
}

// NewLoadTracker returns a tracker for the given number of experts. Counts of more experts
// than fit in the memory this process may use (two float64s each) are an error before any is
// allocated (NewLoadTracker(math.MaxInt) panicked, and 1<<40 ended the process out of
// memory).
func NewLoadTracker(experts int) (*LoadTracker, error) {
	if experts < 1 {
		return nil, fmt.Errorf("gomoe: train: load tracker needs at least one expert, got %d", experts)
	}
	if err := hostmem.Check(fmt.Sprintf("gomoe: train: NewLoadTracker: the counts of %d experts", experts), 16*float64(experts)); err != nil {
		return nil, err
	}
	return &LoadTracker{
		experts: experts,
		window:  make([]float64, experts),
		total:   make([]float64, experts),
	}, nil
}

// Experts returns the number of experts tracked (0 for a nil tracker).
func (lt *LoadTracker) Experts() int {
	if lt == nil {
		return 0
	}
	return lt.experts
}

// Add records one step's tokens-per-expert counts. slots is the number of
// (token, expert) pairs the router asked for (T·K); the difference to the
// sum of counts is the number dropped by the capacity limit.
func (lt *LoadTracker) Add(counts []int32, slots int) error {
	if lt == nil {
		return errors.New("gomoe: train: Add to a nil *LoadTracker (make it with NewLoadTracker)")
	}
	if len(counts) != lt.experts {
		return fmt.Errorf("gomoe: train: load tracker got %d counts for %d experts", len(counts), lt.experts)
	}
	if slots < 0 {
		return fmt.Errorf("gomoe: train: load tracker got %d routed pairs, want a count >= 0", slots)
	}
	sum := 0.0
	for _, c := range counts {
		if c < 0 {
			return errors.New("gomoe: train: negative expert count")
		}
		sum += float64(c)
	}
	if sum > float64(slots) {
		return fmt.Errorf("gomoe: train: experts processed %g pairs but only %d were routed", sum, slots)
	}
	for e, c := range counts {
		lt.window[e] += float64(c)
		lt.total[e] += float64(c)
	}
	lt.slots += float64(slots)
	lt.kept += sum
	lt.asked += float64(slots)
	lt.dropped += float64(slots) - sum
	return nil
}

// Dropped returns the fraction of routed (token, expert) pairs dropped by
// the capacity limit over the whole run.
func (lt *LoadTracker) Dropped() float64 {
	if lt == nil || lt.asked == 0 {
		return 0
	}
	return lt.dropped / lt.asked
}

// Snapshot closes the current window at step, stores the shares and returns
// a one-line summary of the window's load ("" for a nil tracker).
func (lt *LoadTracker) Snapshot(step int) string {
	if lt == nil {
		return ""
	}
	frac := shares(lt.window)
	lt.Steps = append(lt.Steps, float64(step))
	lt.Frac = append(lt.Frac, frac)
	for e := range lt.window {
		lt.window[e] = 0
	}
	line := FormatLoad(frac)
	if lt.slots > lt.kept {
		line += fmt.Sprintf("  dropped %.1f%%", 100*(lt.slots-lt.kept)/lt.slots)
	}
	lt.slots, lt.kept = 0, 0
	return line
}

// Total returns each expert's share of all token slots routed so far (nil for a nil
// tracker).
func (lt *LoadTracker) Total() []float64 {
	if lt == nil {
		return nil
	}
	return shares(lt.total)
}

// Imbalance returns the max/mean ratio of the load over the whole run (NaN before any
// routed slot).
func (lt *LoadTracker) Imbalance() float64 { return Imbalance(lt.Total()) }

func shares(c []float64) []float64 {
	sum := 0.0
	for _, v := range c {
		sum += v
	}
	out := make([]float64, len(c))
	if sum == 0 {
		return out
	}
	for e, v := range c {
		out[e] = v / sum
	}
	return out
}

// Imbalance returns max/mean of the shares: 1 is a perfectly balanced load,
// E means every slot went to one expert.
func Imbalance(frac []float64) float64 {
	if len(frac) == 0 {
		return math.NaN()
	}
	max, sum := 0.0, 0.0
	for _, f := range frac {
		sum += f
		if f > max {
			max = f
		}
	}
	if sum == 0 {
		return math.NaN()
	}
	return max / (sum / float64(len(frac)))
}

// FormatLoad renders shares as percentages followed by the max/mean ratio.
func FormatLoad(frac []float64) string {
	var b strings.Builder
	b.WriteString("expert load %:")
	for _, f := range frac {
		fmt.Fprintf(&b, " %4.1f", 100*f)
	}
	fmt.Fprintf(&b, "  max/mean %.2f", Imbalance(frac))
	return b.String()
}

// loadTrackerJSON is a LoadTracker's whole state as JSON: the snapshots and the counts behind
// Total, Dropped and the open window, so that a tracker saved beside a checkpoint resumes as
// if the run had not stopped.
type loadTrackerJSON struct {
	Experts int         `json:"experts"`
	Window  []float64   `json:"window"`
	Total   []float64   `json:"total"`
	Slots   float64     `json:"slots"`
	Kept    float64     `json:"kept"`
	Dropped float64     `json:"dropped"`
	Asked   float64     `json:"asked"`
	Steps   []float64   `json:"steps"`
	Frac    [][]float64 `json:"frac"`
}

// MarshalJSON encodes the tracker's whole state (UnmarshalJSON restores it): save it with a
// checkpoint (for example as a string of train.Checkpoint.Meta) so that a resumed run's
// Total, Imbalance, Dropped and snapshots go on as the unbroken run's.
func (lt *LoadTracker) MarshalJSON() ([]byte, error) {
	if lt == nil {
		return []byte("null"), nil
	}
	return json.Marshal(loadTrackerJSON{lt.experts, lt.window, lt.total, lt.slots, lt.kept, lt.dropped, lt.asked, lt.Steps, lt.Frac})
}

// UnmarshalJSON restores a tracker from MarshalJSON's encoding. State that no run makes (no
// experts, counts of other lengths, negative, fractional or non-finite counts, more kept than
// asked, shares outside [0, 1], steps that are not whole numbers) is an error and leaves lt as
// it was.
func (lt *LoadTracker) UnmarshalJSON(b []byte) error {
	if lt == nil {
		return errors.New("gomoe: train: LoadTracker.UnmarshalJSON into a nil *LoadTracker")
	}
	var s loadTrackerJSON
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("gomoe: train: LoadTracker.UnmarshalJSON: %w", err)
	}
	bad := func(what string) error {
		return fmt.Errorf("gomoe: train: LoadTracker.UnmarshalJSON: %s", what)
	}
	// Counts are sums of whole counts (a float64 of a whole number stays whole), a share is a
	// count over their sum, a step a float64 of an int.
	count := func(x float64) bool { return x >= 0 && !math.IsInf(x, 0) && x == math.Trunc(x) }
	switch {
	case s.Experts < 1:
		return bad(fmt.Sprintf("%d experts, want at least one", s.Experts))
	case len(s.Window) != s.Experts || len(s.Total) != s.Experts:
		return bad(fmt.Sprintf("%d window and %d total counts for %d experts", len(s.Window), len(s.Total), s.Experts))
	case len(s.Steps) != len(s.Frac):
		return bad(fmt.Sprintf("%d snapshot steps but %d snapshots", len(s.Steps), len(s.Frac)))
	case !count(s.Slots) || !count(s.Kept) || !count(s.Dropped) || !count(s.Asked) || s.Kept > s.Slots || s.Dropped > s.Asked:
		return bad(fmt.Sprintf("slots %v, kept %v, dropped %v, asked %v", s.Slots, s.Kept, s.Dropped, s.Asked))
	}
	var inWindow, inTotal float64
	for e := range s.Window {
		if !count(s.Window[e]) || !count(s.Total[e]) || s.Window[e] > s.Total[e] {
			return bad(fmt.Sprintf("expert %d has counts %v (window) and %v (total)", e, s.Window[e], s.Total[e]))
		}
		inWindow += s.Window[e]
		inTotal += s.Total[e]
	}
	// What Add keeps together: the window's counts are the pairs kept since the last snapshot,
	// the totals and the dropped pairs are all the pairs asked for, and the window's slots are
	// some of them (a tracker that broke these used to load, and Snapshot then printed a load,
	// or a share dropped, that Total and Dropped denied).
	switch {
	case inWindow != s.Kept:
		return bad(fmt.Sprintf("the window's counts add up to %v, but kept is %v", inWindow, s.Kept))
	case inTotal+s.Dropped != s.Asked:
		return bad(fmt.Sprintf("the total counts add up to %v and dropped is %v, but asked is %v", inTotal, s.Dropped, s.Asked))
	case s.Slots > s.Asked || s.Slots-s.Kept > s.Dropped:
		return bad(fmt.Sprintf("the window's slots %v (kept %v) do not fit the run's asked %v and dropped %v", s.Slots, s.Kept, s.Asked, s.Dropped))
	}
	for i, f := range s.Frac {
		if len(f) != s.Experts {
			return bad(fmt.Sprintf("snapshot %d has %d shares for %d experts", i, len(f), s.Experts))
		}
		if x := s.Steps[i]; x != math.Trunc(x) || math.IsInf(x, 0) {
			return bad(fmt.Sprintf("snapshot %d is at step %v, want a whole number", i, x))
		}
		for e, x := range f {
			if !(x >= 0 && x <= 1) {
				return bad(fmt.Sprintf("snapshot %d gives expert %d the share %v, want one in [0, 1]", i, e, x))
			}
		}
	}
	*lt = LoadTracker{experts: s.Experts, window: s.Window, total: s.Total, slots: s.Slots, kept: s.Kept,
		dropped: s.Dropped, asked: s.Asked, Steps: s.Steps, Frac: s.Frac}
	return nil
}
