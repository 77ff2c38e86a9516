package trainutil

import (
	"bytes"
	"flag"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/train"
)

// TestLoopConfig: the flags set every field; Validate names the bad field; Last, SaveDue
// and Optimizer follow the flags.
func TestLoopConfig(t *testing.T) {
	c := LoopConfig{LR: 1e-3, LRFloor: 0.1}
	fs := flag.NewFlagSet("loop", flag.ContinueOnError)
	c.AddFlags(fs, "-steps")
	args := []string{"-lr=0.02", "-lr-floor=0.5", "-warmup=3", "-clip=2", "-save=s", "-save-every=4", "-resume=r", "-stop-at=6"}
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	want := LoopConfig{LR: 0.02, LRFloor: 0.5, Warmup: 3, Clip: 2, Save: "s", SaveEvery: 4, Resume: "r", StopAt: 6}
	if c != want {
		t.Errorf("flags: got %+v, want %+v", c, want)
	}
	if u := fs.Lookup("resume").Usage; !strings.Contains(u, "-steps is the whole run's length") {
		t.Errorf("-resume usage %q", u)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if got := []int{c.Last(10), c.Last(6), c.Last(5)}; got[0] != 6 || got[1] != 6 || got[2] != 5 {
		t.Errorf("Last(10, 6, 5) = %v, want [6 6 5]", got)
	}
	var due []int
	for s := 0; s < 10; s++ {
		if c.SaveDue(s, 8) {
			due = append(due, s)
		}
	}
	if len(due) != 1 || due[0] != 3 { // after steps 4 and 8; 8 is the last, saved at the end
		t.Errorf("SaveDue at steps %v, want [3]", due)
	}
	opt, sched, err := c.Optimizer(10)
	if err != nil || opt.LR != 0.02 || opt.MaxGradNorm != 2 || sched != (train.Cosine{Peak: 0.02, Floor: 0.5, Warmup: 3, Total: 10}) {
		t.Errorf("Optimizer: %+v %+v %v", opt, sched, err)
	}
	for _, bad := range []struct {
		c   LoopConfig
		err string
	}{
		{LoopConfig{LR: 0}, "-lr 0: want a finite number > 0"},
		{LoopConfig{LR: math.NaN()}, "-lr NaN"},
		{LoopConfig{LR: math.Inf(1)}, "-lr +Inf"},
		{LoopConfig{LR: 1, LRFloor: 2}, "-lr-floor 2: want a finite number >= 0 and <= 1"},
		{LoopConfig{LR: 1, Warmup: -1}, "-warmup -1: want an integer in [0, 1073741824]"},
		{LoopConfig{LR: 1, SaveEvery: -3}, "-save-every -3"},
		// Without -save it saved nothing, silently (an interrupt then said "no -save").
		{LoopConfig{LR: 1, SaveEvery: 5}, "-save-every 5: needs -save (the folder to save in)"},
		{LoopConfig{LR: 1, StopAt: -2}, "-stop-at -2"},
		{LoopConfig{LR: 1, Clip: math.NaN()}, "-clip NaN"},
		// Rates float32 Adam refuses, which used to fail at step 0 (after the data was read and
		// -out made) or mid-run at the floor.
		{LoopConfig{LR: 1e300}, "-lr 1e+300: want a finite number > 0 and <= 3.4028234663852886e+38"},
		{LoopConfig{LR: 1e-60}, "-lr 1e-60: -lr, 1e-60, rounds to 0 in float32"},
		{LoopConfig{LR: 1e-44, Warmup: 100}, "-lr 1e-44: the first warmup step's -lr / -warmup, 1e-46, rounds to 0 in float32"},
		{LoopConfig{LR: 1e-44, LRFloor: 0.01}, "-lr 1e-44: the floor -lr × -lr-floor, 1e-46, rounds to 0 in float32"},
	} {
		if err := bad.c.Validate(); err == nil || !strings.Contains(err.Error(), bad.err) {
			t.Errorf("%+v: %v, want an error containing %q", bad.c, err, bad.err)
		}
	}
}

// TestLoopSaveResume: SaveRun with -save and ResumeRun with -resume restore the weights, the
// step and the sources, keep this run's clipping and note another run length; without the
// flags they do nothing.
func TestLoopSaveResume(t *testing.T) {
	dir := t.TempDir()
	mk := func(v float32) *G.Node {
		return G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(1), G.WithName("w"), G.WithValue(tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{v}))))
	}
	w := mk(3)
	src := rand.NewPCG(1, 2)
	rand.New(src).Uint64()
	var log bytes.Buffer
	prog := train.NewProgress(nil, &log, 1, "x", "t")
	c := LoopConfig{LR: 1, Clip: 5, Save: dir}
	opt, _, err := c.Optimizer(10)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.SaveRun(prog, G.Nodes{w}, opt, Run{Step: 4, Steps: 10, Sources: map[string]*rand.PCG{"data": src}}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "step     4  saved "+dir) {
		t.Errorf("save log %q", log.String())
	}
	w2, src2 := mk(0), rand.NewPCG(7, 7)
	r := LoopConfig{LR: 1, Clip: 1, Resume: dir}
	opt2, _, _ := r.Optimizer(12)
	var out bytes.Buffer
	first, err := r.ResumeRun(&out, G.Nodes{w2}, opt2, 12, map[string]*rand.PCG{"data": src2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first != 4 || w2.Value().Data().([]float32)[0] != 3 || *src2 != *src || opt2.MaxGradNorm != 1 {
		t.Errorf("resumed at %d, w %v, source equal %v, clip %v; want 4, 3, true, 1", first, w2.Value(), *src2 == *src, opt2.MaxGradNorm)
	}
	if !strings.Contains(out.String(), "resumed from "+dir+" at step 4 of 10") || !strings.Contains(out.String(), "had 10 steps, this one 12") {
		t.Errorf("resume report %q", out.String())
	}
	none := LoopConfig{LR: 1}
	if first, err := none.ResumeRun(&out, G.Nodes{w2}, opt2, 12, nil, nil); first != 0 || err != nil {
		t.Errorf("no -resume: %d %v", first, err)
	}
	if err := none.SaveRun(prog, G.Nodes{w2}, opt2, Run{}); err != nil {
		t.Errorf("no -save: %v", err)
	}
}

// TestShareWeights: the copy's nodes hold the trained values themselves (an update in place
// shows in both); a copy of another size is an error.
func TestShareWeights(t *testing.T) {
	g, g2 := G.NewGraph(), G.NewGraph()
	a := G.NewVector(g, tensor.Float32, G.WithShape(2), G.WithName("a"), G.WithValue(tensor.New(tensor.WithShape(2), tensor.WithBacking([]float32{1, 2}))))
	b := G.NewVector(g2, tensor.Float32, G.WithShape(2), G.WithName("a"))
	if err := ShareWeights(G.Nodes{b}, G.Nodes{a}); err != nil {
		t.Fatal(err)
	}
	a.Value().Data().([]float32)[1] = 9
	if got := b.Value().Data().([]float32); got[0] != 1 || got[1] != 9 {
		t.Errorf("shared value %v, want [1 9]", got)
	}
	if err := ShareWeights(G.Nodes{b}, G.Nodes{a, a}); err == nil {
		t.Error("sizes differ: no error")
	}
}

// TestLoadRunAllOrNothing: a checkpoint without a source the run asks for is an error that
// leaves the weights, the optimiser and the other sources as they were (the weights and the
// optimiser used to be loaded before the missing source was found).
func TestLoadRunAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	mk := func(v float32) *G.Node {
		return G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("w"), G.WithValue(tensor.New(tensor.WithBacking([]float32{v, v}))))
	}
	if err := SaveRun(dir, G.Nodes{mk(1)}, train.NewAdam(0.5), Run{Step: 3, Steps: 10, Sources: map[string]*rand.PCG{"data": rand.NewPCG(1, 2)}}); err != nil {
		t.Fatal(err)
	}
	w, opt := mk(7), train.NewAdam(0.01)
	data, other := rand.NewPCG(5, 6), rand.NewPCG(5, 6)
	_, _, err := LoadRun(dir, G.Nodes{w}, opt, Run{Sources: map[string]*rand.PCG{"data": data, "other": other}})
	if err == nil || !strings.Contains(err.Error(), "source other") {
		t.Fatalf("LoadRun: %v, want an error naming the source other", err)
	}
	if v := w.Value().Data().([]float32); v[0] != 7 || v[1] != 7 || opt.LR != 0.01 {
		t.Errorf("a failed LoadRun changed the weights to %v and the learning rate to %v", v, opt.LR)
	}
	if want := rand.NewPCG(5, 6).Uint64(); data.Uint64() != want {
		t.Errorf("a failed LoadRun changed the source data")
	}
	// The same run without the missing source loads everything.
	step, steps, err := LoadRun(dir, G.Nodes{w}, opt, Run{Sources: map[string]*rand.PCG{"data": data}})
	if err != nil || step != 3 || steps != 10 {
		t.Fatalf("LoadRun: step %d of %d, %v", step, steps, err)
	}
	if v := w.Value().Data().([]float32); v[0] != 1 || opt.LR != 0.5 || data.Uint64() != rand.NewPCG(1, 2).Uint64() {
		t.Errorf("LoadRun gave w %v, learning rate %v, and a data source not at its saved state", v, opt.LR)
	}
}

// TestLoadRunOtherData: a checkpoint of a run on other data (another fingerprint) is an error
// that names both and loads nothing; a checkpoint without one, or a run that gives none, is
// not checked.
func TestLoadRunOtherData(t *testing.T) {
	dir := t.TempDir()
	mk := func(v float32) *G.Node {
		return G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("w"), G.WithValue(tensor.New(tensor.WithBacking([]float32{v, v}))))
	}
	fp := func(s string) string { return Fingerprint(func(w io.Writer) { io.WriteString(w, s) }) }
	saved, other := fp("the saved run's data"), fp("other data")
	if saved == other || len(saved) != 16 || saved != fp("the saved run's data") {
		t.Fatalf("fingerprints %q and %q", saved, other)
	}
	if err := SaveRun(dir, G.Nodes{mk(1)}, train.NewAdam(0.5), Run{Step: 3, Steps: 10, Data: saved}); err != nil {
		t.Fatal(err)
	}
	w, opt := mk(7), train.NewAdam(0.01)
	_, _, err := LoadRun(dir, G.Nodes{w}, opt, Run{Data: other})
	if err == nil || !strings.Contains(err.Error(), "other data (fingerprint "+saved+", this run's "+other+")") {
		t.Fatalf("LoadRun on other data: %v", err)
	}
	if v := w.Value().Data().([]float32); v[0] != 7 || opt.LR != 0.01 {
		t.Errorf("a failed LoadRun changed the weights to %v and the learning rate to %v", v, opt.LR)
	}
	for _, data := range []string{saved, ""} {
		if _, _, err := LoadRun(dir, G.Nodes{mk(7)}, train.NewAdam(0.01), Run{Data: data}); err != nil {
			t.Errorf("LoadRun with data %q: %v", data, err)
		}
	}
	old := t.TempDir() // a checkpoint saved without a fingerprint
	if err := SaveRun(old, G.Nodes{mk(1)}, train.NewAdam(0.5), Run{Step: 3, Steps: 10}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadRun(old, G.Nodes{mk(7)}, train.NewAdam(0.01), Run{Data: other}); err != nil {
		t.Errorf("LoadRun of a checkpoint without a fingerprint: %v", err)
	}
}

// TestSessionEndReleasesInterrupts: after End (the training loop is over: the final
// evaluation, charlm's sample and the plots follow), the session no longer takes interrupts,
// so Ctrl-C ends the program. It used to hold them until run returned: Ctrl-C, pressed any
// number of times, was ignored while charlm generated its sample (hours with -sample 16777216).
func TestSessionEndReleasesInterrupts(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("os.Process.Signal cannot send an interrupt on Windows")
	}
	// This test's own catch keeps the interrupt from ending the test binary.
	catch := make(chan os.Signal, 1)
	signal.Notify(catch, os.Interrupt)
	defer signal.Stop(catch)
	w := G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(1), G.WithName("w"), G.WithValue(tensor.New(tensor.WithShape(1), tensor.WithBacking([]float32{1}))))
	c := LoopConfig{LR: 1}
	opt, _, err := c.Optimizer(3)
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.StartRun(io.Discard, nil, G.Nodes{w}, opt, 3, nil, nil, 1, "x")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for step := s.First; step < s.Last; step++ {
		if err := s.Checkpoint(step); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.End(); err != nil {
		t.Fatal(err)
	}
	p, err := os.FindProcess(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-catch:
	case <-time.After(10 * time.Second):
		t.Fatal("the interrupt never arrived")
	}
	time.Sleep(200 * time.Millisecond)
	if sg, ok := s.intr.caught(); ok {
		t.Errorf("the session took the interrupt (%v) after End: Ctrl-C would be ignored until run returns", sg)
	}
}

// TestLoadRunNoCheckpoint: a -resume folder without a checkpoint, or the checkpoint file given
// instead of its folder, is an error that says it is the resume that failed and, for the file,
// what to give; both used to be a bare safetensors stat error (".../checkpoint.safetensors/
// checkpoint.safetensors: not a directory").
func TestLoadRunNoCheckpoint(t *testing.T) {
	dir := t.TempDir()
	w := G.NewVector(G.NewGraph(), tensor.Float32, G.WithShape(2), G.WithName("w"), G.WithValue(tensor.New(tensor.WithBacking([]float32{1, 1}))))
	if err := SaveRun(dir, G.Nodes{w}, train.NewAdam(0.5), Run{Step: 3, Steps: 10}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, CheckpointFile)
	missing := filepath.Join(dir, "none")
	for _, c := range []struct{ dir, want string }{
		{file, "resume from " + file + ": a file, not a folder (give the folder that holds " + CheckpointFile + ": " + dir + ")"},
		{missing, "resume from " + missing + ": "},
	} {
		if _, _, err := LoadRun(c.dir, G.Nodes{w}, train.NewAdam(0.5), Run{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadRun(%s): %v, want an error containing %q", c.dir, err, c.want)
		}
	}
}
