package train

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/gomoe/gomoe/internal/hostmem"
)

func TestLoadTracker(t *testing.T) {
	lt, err := NewLoadTracker(4)
	if err != nil {
		t.Fatal(err)
	}
	steps := [][]int32{{1, 2, 3, 2}, {3, 2, 1, 2}, {0, 0, 8, 0}}
	for _, c := range steps[:2] {
		if err := lt.Add(c, 8); err != nil {
			t.Fatal(err)
		}
	}
	line := lt.Snapshot(2)
	if err := lt.Add(steps[2], 10); err != nil { // 2 of 10 pairs dropped
		t.Fatal(err)
	}
	line2 := lt.Snapshot(3)
	if !strings.Contains(line2, "dropped 20.0%") || strings.Contains(line, "dropped") {
		t.Errorf("drop reports %q and %q, want none then 20%%", line, line2)
	}
	if got := lt.Dropped(); math.Abs(got-2.0/26) > 1e-15 {
		t.Errorf("Dropped() = %v, want 2/26", got)
	}

	// Window 1: counts 4,4,4,4 -> 1/4 each; window 2: all on expert 2.
	want := [][]float64{{0.25, 0.25, 0.25, 0.25}, {0, 0, 1, 0}}
	for i := range want {
		for e := range want[i] {
			if lt.Frac[i][e] != want[i][e] {
				t.Errorf("snapshot %d expert %d: share %v, want %v", i, e, lt.Frac[i][e], want[i][e])
			}
		}
	}
	if lt.Steps[0] != 2 || lt.Steps[1] != 3 {
		t.Errorf("steps %v, want [2 3]", lt.Steps)
	}
	// Total: 4,4,12,4 of 24.
	tot := lt.Total()
	for e, w := range []float64{4.0 / 24, 4.0 / 24, 12.0 / 24, 4.0 / 24} {
		if !(math.Abs(tot[e]-w) <= 1e-15) {
			t.Errorf("total share of expert %d = %v, want %v", e, tot[e], w)
		}
	}
	if !strings.Contains(line, "25.0 25.0 25.0 25.0") || !strings.Contains(line, "max/mean 1.00") {
		t.Errorf("summary %q", line)
	}
}

func TestLoadTrackerErrors(t *testing.T) {
	if _, err := NewLoadTracker(0); err == nil {
		t.Error("NewLoadTracker(0) gave no error")
	}
	// Counts beyond the memory this process may use are an error before any allocation:
	// math.MaxInt panicked (makeslice: len out of range), 1<<40 ended the process.
	for _, c := range []struct {
		experts int
		limit   uint64 // 0: the machine's
		want    string
	}{
		{math.MaxInt, 0, "gomoe: train: NewLoadTracker: the counts of 9223372036854775807 experts need 1.476e+20 bytes, more than the "},
		{1 << 40, 0, "the counts of 1099511627776 experts need 1.759e+13 bytes"},
		{1 << 20, 16<<20 - 1, "the counts of 1048576 experts need 1.678e+07 bytes, more than the 16777215 bytes of memory this process may use (a limit set by SetLimit)"},
	} {
		prev := hostmem.SetLimit(c.limit)
		lt, err := NewLoadTracker(c.experts)
		hostmem.SetLimit(prev)
		if err == nil || !strings.Contains(err.Error(), c.want) || lt != nil {
			t.Errorf("NewLoadTracker(%d): %v, %v, want an error containing %q", c.experts, lt, err, c.want)
		}
	}
	prev := hostmem.SetLimit(16 << 20)
	big, err := NewLoadTracker(1 << 20) // within its memory
	hostmem.SetLimit(prev)
	if err != nil || big.Experts() != 1<<20 || len(big.Total()) != 1<<20 {
		t.Errorf("NewLoadTracker(1<<20) within 16 MiB: %v", err)
	}
	lt, _ := NewLoadTracker(2)
	tests := []struct {
		name   string
		counts []int32
		slots  int
		want   string
	}{
		{"short", []int32{1}, 2, "1 counts for 2 experts"},
		{"long", []int32{1, 2, 3}, 6, "3 counts for 2 experts"},
		{"negative", []int32{1, -1}, 2, "negative"},
		{"more than routed", []int32{2, 2}, 3, "only 3 were routed"},
	}
	for _, tt := range tests {
		err := lt.Add(tt.counts, tt.slots)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: got %v, want an error naming %q", tt.name, err, tt.want)
		}
	}
	// Nothing was recorded by the failed calls.
	lt.Snapshot(1)
	if lt.Frac[0][0] != 0 || lt.Frac[0][1] != 0 {
		t.Errorf("failed Add changed the counts: %v", lt.Frac[0])
	}
	// Every method of a nil tracker returns an error or a zero value (they panicked).
	var nilLT *LoadTracker
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("a method of a nil tracker panicked: %v", r)
			}
		}()
		if err := nilLT.Add([]int32{1}, 1); err == nil || !strings.Contains(err.Error(), "nil *LoadTracker") {
			t.Errorf("Add: %v", err)
		}
		if nilLT.Experts() != 0 || nilLT.Dropped() != 0 || nilLT.Snapshot(1) != "" || nilLT.Total() != nil || !math.IsNaN(nilLT.Imbalance()) {
			t.Errorf("a nil tracker's methods did not give their zero values")
		}
	}()
}

func TestImbalance(t *testing.T) {
	tests := []struct {
		frac []float64
		want float64
	}{
		{[]float64{0.25, 0.25, 0.25, 0.25}, 1},
		{[]float64{1, 0, 0, 0}, 4},
		{[]float64{0.5, 0.25, 0.25, 0}, 2},
	}
	for _, tt := range tests {
		if got := Imbalance(tt.frac); math.Abs(got-tt.want) > 1e-12 {
			t.Errorf("Imbalance(%v) = %v, want %v", tt.frac, got, tt.want)
		}
	}
	if !math.IsNaN(Imbalance([]float64{0, 0})) {
		t.Error("Imbalance of an empty load is not NaN")
	}
}

// TestLoadTrackerSurvivesResume: a tracker restored from its JSON (what a run saves beside its
// checkpoint) must report what the unbroken run's tracker reports. Only Steps and Frac were
// exported, so Total, Imbalance, Dropped and the open window restarted from zero on resume.
func TestLoadTrackerSurvivesResume(t *testing.T) {
	steps := [][]int32{{6, 2}, {5, 1}, {1, 7}, {4, 4}}
	unbroken, _ := NewLoadTracker(2)
	first, _ := NewLoadTracker(2)
	for i, c := range steps[:3] {
		for _, lt := range []*LoadTracker{unbroken, first} {
			if err := lt.Add(c, 10); err != nil {
				t.Fatal(err)
			}
			if i == 1 {
				lt.Snapshot(2)
			}
		}
	}
	b, err := json.Marshal(first)
	if err != nil {
		t.Fatal(err)
	}
	resumed := &LoadTracker{}
	if err := json.Unmarshal(b, resumed); err != nil {
		t.Fatal(err)
	}
	for _, lt := range []*LoadTracker{unbroken, resumed} {
		if err := lt.Add(steps[3], 10); err != nil {
			t.Fatalf("Add after the resume: %v", err)
		}
	}
	if a, b := unbroken.Snapshot(4), resumed.Snapshot(4); a != b {
		t.Errorf("window after the resume: %q, unbroken %q", b, a)
	}
	if a, b := unbroken.Dropped(), resumed.Dropped(); a != b {
		t.Errorf("Dropped: resumed %v, unbroken %v", b, a)
	}
	if a, b := unbroken.Imbalance(), resumed.Imbalance(); a != b && !(math.IsNaN(a) && math.IsNaN(b)) {
		t.Errorf("Imbalance: resumed %v, unbroken %v", b, a)
	}
	if a, b := unbroken.Experts(), resumed.Experts(); a != b {
		t.Errorf("Experts: resumed %v, unbroken %v", b, a)
	}
}

// TestLoadTrackerUnmarshalBad: state no run makes is a gomoe: error and changes nothing.
func TestLoadTrackerUnmarshalBad(t *testing.T) {
	lt, _ := NewLoadTracker(2)
	if err := lt.Add([]int32{1, 1}, 2); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{`{}`, `{"experts":2,"window":[0],"total":[0,0]}`, `{"experts":1,"window":[-1],"total":[0]}`,
		`{"experts":1,"window":[0],"total":[0],"kept":2,"slots":1}`, `{"experts":1,"window":[0],"total":[0],"steps":[1]}`, `[`,
		// Counts are sums of whole counts, shares are in [0, 1], steps are whole: these used
		// to load, and went into the expert-load plot as they were.
		`{"experts":1,"window":[0.5],"total":[0.5],"kept":0.5,"slots":1,"asked":1,"dropped":0.5}`,
		`{"experts":1,"window":[0],"total":[0],"kept":0,"slots":1.25}`,
		`{"experts":2,"window":[0,0],"total":[0,0],"steps":[1],"frac":[[-0.5,1.5]]}`,
		`{"experts":1,"window":[0],"total":[0],"steps":[1.5],"frac":[[1]]}`} {
		if err := json.Unmarshal([]byte(in), lt); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
	if lt.Experts() != 2 || lt.Total()[0] != 0.5 {
		t.Errorf("a refused UnmarshalJSON changed the tracker: %d experts, total %v", lt.Experts(), lt.Total())
	}
}

// TestLoadTrackerJSONConsistency: a tracker whose counts contradict each other (a window larger
// than the run's total, window counts with nothing kept, slots with nothing asked, totals that
// do not add up to what was asked) is refused; they used to load, and Snapshot then printed a
// load, or a share dropped, that Total and Dropped denied. Add refuses negative slots by name.
func TestLoadTrackerJSONConsistency(t *testing.T) {
	for _, c := range []struct{ json, want string }{
		{`{"experts":2,"window":[5,5],"total":[0,0],"slots":0,"kept":0,"dropped":0,"asked":0}`, "expert 0 has counts 5 (window) and 0 (total)"},
		{`{"experts":2,"window":[1,1],"total":[1,1],"slots":2,"kept":0,"dropped":0,"asked":2}`, "the window's counts add up to 2, but kept is 0"},
		{`{"experts":2,"window":[0,0],"total":[1,0],"slots":10,"kept":0,"dropped":0,"asked":0}`, "the total counts add up to 1 and dropped is 0, but asked is 0"},
		{`{"experts":2,"window":[0,0],"total":[1,0],"slots":10,"kept":0,"dropped":9,"asked":10}`, "the window's slots 10 (kept 0) do not fit"},
	} {
		var lt LoadTracker
		if err := lt.UnmarshalJSON([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error containing %q", c.json, err, c.want)
		}
	}
	// A tracker that Add made loads back.
	lt, _ := NewLoadTracker(2)
	for _, a := range []struct {
		c     []int32
		slots int
	}{{[]int32{3, 1}, 6}, {[]int32{2, 2}, 4}} {
		if err := lt.Add(a.c, a.slots); err != nil {
			t.Fatal(err)
		}
	}
	lt.Snapshot(1)
	if err := lt.Add([]int32{1, 0}, 2); err != nil {
		t.Fatal(err)
	}
	b, err := lt.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var back LoadTracker
	if err := back.UnmarshalJSON(b); err != nil {
		t.Errorf("a tracker Add made does not load back: %v (%s)", err, b)
	}
	if err := lt.Add([]int32{0, 0}, -3); err == nil || !strings.Contains(err.Error(), "got -3 routed pairs") {
		t.Errorf("Add with slots -3: %v, want an error naming the negative count", err)
	}
}
