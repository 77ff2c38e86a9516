package train

import (
	"encoding/json"
	"math"
	"testing"
)

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
		`{"experts":1,"window":[0],"total":[0],"kept":2,"slots":1}`, `{"experts":1,"window":[0],"total":[0],"steps":[1]}`, `[`} {
		if err := json.Unmarshal([]byte(in), lt); err == nil {
			t.Errorf("%s: no error", in)
		}
	}
	if lt.Experts() != 2 || lt.Total()[0] != 0.5 {
		t.Errorf("a refused UnmarshalJSON changed the tracker: %d experts, total %v", lt.Experts(), lt.Total())
	}
}
