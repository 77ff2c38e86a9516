package trainutil

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/train"
)

// vecW is a weight "w" of two float32 values v.
func vecW(v float32) *G.Node {
	return G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("w"), G.WithValue(tensor.New(tensor.WithBacking([]float32{v, v}))))
}

// TestLoadRunOneVersion: a checkpoint replaced while LoadRun reads it (another run saving into
// the folder) loads whole, its step with its weights. LoadRun used to read the step from one
// open of the file and the weights from a second, and returned step 1 with step 2's weights
// within a few dozen loads.
func TestLoadRunOneVersion(t *testing.T) {
	dir, stage := t.TempDir(), t.TempDir()
	for i := 1; i <= 2; i++ {
		d := filepath.Join(stage, string(rune('0'+i)))
		if err := SaveRun(d, G.Nodes{vecW(float32(i))}, train.NewAdam(0.1), Run{Step: i, Steps: 10}); err != nil {
			t.Fatal(err)
		}
	}
	ckpt := filepath.Join(dir, CheckpointFile)
	var stop atomic.Bool
	done := make(chan struct{})
	go func() { // a saver that replaces the checkpoint atomically, alternating step 1 and 2
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			src := filepath.Join(stage, string(rune('1'+i%2)), CheckpointFile)
			tmp := ckpt + ".tmp"
			b, _ := os.ReadFile(src)
			os.WriteFile(tmp, b, 0o644)
			os.Rename(tmp, ckpt)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	deadline := time.Now().Add(2 * time.Second)
	loaded := 0
	for n := 0; time.Now().Before(deadline); n++ {
		w := vecW(0)
		step, _, err := LoadRun(dir, G.Nodes{w}, train.NewAdam(0.1), Run{})
		if err != nil {
			continue // a rename is atomic where the tests run, but not on every file system
		}
		loaded++
		if got := w.Value().Data().([]float32)[0]; got != float32(step) {
			t.Fatalf("after %d loads: LoadRun returned step %d but loaded the weights of step %v", n, step, got)
		}
	}
	if loaded < 10 {
		t.Errorf("only %d loads succeeded in 2 s", loaded)
	}
}

// TestRunNilSource: a nil source in Run.Sources is an error, and LoadRun loads nothing. SaveRun
// used to panic (a nil *rand.PCG's MarshalBinary); LoadRun loaded the weights and the
// optimiser, then panicked assigning through the nil pointer.
func TestRunNilSource(t *testing.T) {
	dir := t.TempDir()
	t.Run("save", func(t *testing.T) {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("SaveRun with a nil source panicked: %v", r)
			}
		}()
		if err := SaveRun(t.TempDir(), G.Nodes{vecW(1)}, train.NewAdam(0.1), Run{Step: 1, Steps: 2, Sources: map[string]*rand.PCG{"data": nil}}); err == nil || !strings.Contains(err.Error(), "source data is nil") {
			t.Errorf("error %v, want one that names the nil source", err)
		}
	})
	if err := SaveRun(dir, G.Nodes{vecW(1)}, train.NewAdam(0.1), Run{Step: 1, Steps: 2, Sources: map[string]*rand.PCG{"data": rand.NewPCG(1, 2)}}); err != nil {
		t.Fatal(err)
	}
	t.Run("load", func(t *testing.T) {
		w := vecW(7)
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("LoadRun with a nil source panicked: %v (w is now %v)", r, w.Value().Data())
			}
		}()
		if _, _, err := LoadRun(dir, G.Nodes{w}, train.NewAdam(0.1), Run{Sources: map[string]*rand.PCG{"data": nil}}); err == nil || !strings.Contains(err.Error(), "source data is nil") {
			t.Errorf("error %v, want one that names the nil source", err)
		}
		if got := w.Value().Data().([]float32); got[0] != 7 || got[1] != 7 {
			t.Errorf("w = %v after the failed LoadRun, want [7 7] (nothing loaded)", got)
		}
	})
}

// TestRunNilAdam: a nil *train.Adam saves and loads the weights only. It became a nil
// *train.Adam inside a G.Solver, which train refuses with advice ("Optimizer nil saves the
// weights only") that cannot be followed through SaveRun.
func TestRunNilAdam(t *testing.T) {
	dir := t.TempDir()
	if err := SaveRun(dir, G.Nodes{vecW(1)}, nil, Run{Step: 1, Steps: 2}); err != nil {
		t.Fatalf("SaveRun(opt nil): %v", err)
	}
	w := vecW(0)
	if step, _, err := LoadRun(dir, G.Nodes{w}, nil, Run{}); err != nil || step != 1 || w.Value().Data().([]float32)[0] != 1 {
		t.Errorf("LoadRun(opt nil): step %d, w %v, %v; want step 1, w [1 1]", step, w.Value().Data(), err)
	}
	// A file saved without optimiser state does not load into an Adam.
	if _, _, err := LoadRun(dir, G.Nodes{vecW(0)}, train.NewAdam(0.1), Run{}); err == nil || !strings.Contains(err.Error(), "no optimiser state") {
		t.Errorf("LoadRun(Adam) of a weights-only file: %v, want the error that says it holds no optimiser state", err)
	}
}

// TestRunFlagsDropSpellings: the spellings of one drop policy resume each other; another
// policy does not.
func TestRunFlagsDropSpellings(t *testing.T) {
	flags := func(drop string) string {
		cfg := BlockConfig{Experts: 4, TopK: 2, Hidden: 8, FFN: 8, Act: "swiglu", Capacity: 1, Drop: drop}
		return cfg.RunFlags()
	}
	for _, c := range []struct {
		saved, now string
		ok         bool
	}{{"probs", "prob", true}, {"prob", "", true}, {"", "probs", true}, {"probs", "position", false}} {
		if err := sameFlags(flags(c.saved), flags(c.now)); (err == nil) != c.ok {
			t.Errorf("saved -drop %q, now %q: %v, want ok %v", c.saved, c.now, err, c.ok)
		}
		// A checkpoint saved before RunFlags spelled the policy one way holds it as given.
		old := strings.Replace(flags("probs"), "-drop probs", "-drop "+c.saved, 1)
		if c.saved == "" {
			old = strings.Replace(flags("probs"), "-drop probs", "-drop prob", 1)
		}
		if err := sameFlags(old, flags(c.now)); (err == nil) != c.ok {
			t.Errorf("saved (old spelling) %q, now -drop %q: %v, want ok %v", old, c.now, err, c.ok)
		}
	}
}

// TestLoadRunFlagsBeforeShapes: resuming with a flag that changes a weight's shape names the
// flag, not the tensor's shape (the run's check used to come after the shape checks).
func TestLoadRunFlagsBeforeShapes(t *testing.T) {
	dir := t.TempDir()
	if err := SaveRun(dir, G.Nodes{vecW(1)}, train.NewAdam(0.1), Run{Step: 1, Steps: 2, Flags: "-hidden 2"}); err != nil {
		t.Fatal(err)
	}
	w3 := G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(3), G.WithName("w"), G.WithInit(G.Zeroes()))
	_, _, err := LoadRun(dir, G.Nodes{w3}, train.NewAdam(0.1), Run{Flags: "-hidden 3"})
	if err == nil || !strings.Contains(err.Error(), "the saved run had -hidden 2, this one -hidden 3") {
		t.Errorf("LoadRun: %v, want the error that names -hidden", err)
	}
}
