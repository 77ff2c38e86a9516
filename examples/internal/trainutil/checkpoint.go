package trainutil

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/train"
)

// CheckpointFile is the name of a run's checkpoint in its -save / -resume folder.
const CheckpointFile = "checkpoint.safetensors"

// Run is the resumable state of an example's training loop besides the weights and the
// optimiser: the next step and the data sources' states, by name.
type Run struct {
	Step    int                  // steps done
	Steps   int                  // steps of the whole run (the schedule's length)
	Sources map[string]*rand.PCG // the data order's random sources
	Flags   string               // the flags a resumed run must repeat ("-name value" pairs; "": no check)
	Data    string               // the data's fingerprint (LoopConfig.DataID; "": no check)
	// State is the example's own state of the loop (what its reports depend on), saved as
	// metadata "state.NAME"; LoadRun replaces the contents of the map given with the saved one.
	State map[string]string
}

// SaveRun writes the weights, Adam's state (none for a nil opt) and r to
// dir/checkpoint.safetensors (making dir).
func SaveRun(dir string, params G.Nodes, opt *train.Adam, r Run) error {
	if err := checkSources(r.Sources); err != nil {
		return fmt.Errorf("save to %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	meta := map[string]string{"step": strconv.Itoa(r.Step), "steps": strconv.Itoa(r.Steps)}
	if r.Flags != "" {
		meta["flags"] = r.Flags
	}
	if r.Data != "" {
		meta["data"] = r.Data
	}
	for name, src := range r.Sources {
		b, err := src.MarshalBinary()
		if err != nil {
			return fmt.Errorf("save source %s: %w", name, err)
		}
		meta["rng."+name] = hex.EncodeToString(b)
	}
	for name, v := range r.State {
		meta["state."+name] = v
	}
	return train.SaveCheckpoint(filepath.Join(dir, CheckpointFile), train.Checkpoint{Params: params, Optimizer: solver(opt), Meta: meta})
}

// LoadRun loads dir/checkpoint.safetensors into params and opt, restores the sources named in
// r.Sources (each must be in the file) and returns the step and run length saved. The run's
// metadata is checked on the same open of the file as the weights are read from, before
// anything is loaded: on an error nothing changes (as with train.LoadCheckpoint, whose checks
// come first), and a save that replaces the file meanwhile cannot mix two runs.
func LoadRun(dir string, params G.Nodes, opt *train.Adam, r Run) (step, steps int, err error) {
	if err := checkSources(r.Sources); err != nil {
		return 0, 0, fmt.Errorf("resume from %s: %w", dir, err)
	}
	if fi, serr := os.Stat(dir); serr == nil && !fi.IsDir() {
		return 0, 0, fmt.Errorf("resume from %s: a file, not a folder (give the folder that holds %s: %s)", dir, CheckpointFile, filepath.Dir(dir))
	}
	var meta map[string]string
	var states map[string]*rand.PCG
	var runErr error // the run's own checks' error, returned as it is
	check := func(m map[string]string) error {
		meta = m
		if step, steps, states, runErr = r.check(m); runErr != nil {
			runErr = fmt.Errorf("resume from %s: %w", dir, runErr)
		}
		return runErr
	}
	if _, err := train.LoadCheckpoint(filepath.Join(dir, CheckpointFile), train.Checkpoint{Params: params, Optimizer: solver(opt), Check: check}); err != nil {
		if runErr != nil {
			return 0, 0, runErr
		}
		return 0, 0, fmt.Errorf("resume from %s: %w", dir, err)
	}
	for name, src := range r.Sources {
		*src = *states[name]
	}
	if r.State != nil {
		clear(r.State)
		for k, v := range meta {
			if name, ok := strings.CutPrefix(k, "state."); ok {
				r.State[name] = v
			}
		}
	}
	return step, steps, nil
}

// check reads a checkpoint's run metadata m against r: the step and run length saved, and the
// states of r's sources; the flags and the data fingerprint must agree with r's.
func (r Run) check(m map[string]string) (step, steps int, states map[string]*rand.PCG, err error) {
	if step, err = strconv.Atoi(m["step"]); err != nil || step < 0 {
		return 0, 0, nil, fmt.Errorf("step %q", m["step"])
	}
	if steps, err = strconv.Atoi(m["steps"]); err != nil || steps < step {
		return 0, 0, nil, fmt.Errorf("steps %q", m["steps"])
	}
	if err := sameFlags(m["flags"], r.Flags); err != nil {
		return 0, 0, nil, err
	}
	if saved := m["data"]; saved != "" && r.Data != "" && saved != r.Data {
		return 0, 0, nil, fmt.Errorf("the saved run trained on other data (fingerprint %s, this run's %s): resume on the saved run's data", saved, r.Data)
	}
	states = map[string]*rand.PCG{}
	for name := range r.Sources {
		states[name] = new(rand.PCG)
		if err := SetSource(states[name], m["rng."+name]); err != nil {
			return 0, 0, nil, fmt.Errorf("source %s: %w", name, err)
		}
	}
	return step, steps, states, nil
}

// checkSources refuses a nil source (its state could be neither saved nor restored).
func checkSources(srcs map[string]*rand.PCG) error {
	for _, name := range slices.Sorted(maps.Keys(srcs)) {
		if srcs[name] == nil {
			return fmt.Errorf("source %s is nil", name)
		}
	}
	return nil
}

// solver is opt as a G.Solver: nil (the weights only) for a nil *train.Adam, which
// train.Checkpoint would refuse as a nil *train.Adam inside a non-nil interface.
func solver(opt *train.Adam) G.Solver {
	if opt == nil {
		return nil
	}
	return opt
}

// canonFlag is a flag's value in one spelling: the drop policy's "prob" (and "", the default)
// is "probs", as a checkpoint saved before RunFlags spelled it one way may hold either.
func canonFlag(name, v string) string {
	if name == "-drop" && (v == "prob" || v == "") {
		return "probs"
	}
	return v
}

// sameFlags returns an error naming the first flag whose value differs between the saved
// run's flags and this run's (both "-name value" pairs); a flag only one of them has, or an
// empty side (a checkpoint from before the flags were saved), is not checked.
func sameFlags(saved, now string) error {
	pairs := func(s string) map[string]string {
		m := map[string]string{}
		f := strings.Fields(s)
		for i := 0; i+1 < len(f); i += 2 {
			m[f[i]] = f[i+1]
		}
		return m
	}
	sm := pairs(saved)
	f := strings.Fields(now)
	for i := 0; i+1 < len(f); i += 2 {
		if v, ok := sm[f[i]]; ok && canonFlag(f[i], v) != canonFlag(f[i], f[i+1]) {
			return fmt.Errorf("the saved run had %s %s, this one %s %s (resume with the saved run's flags: %s)", f[i], v, f[i], f[i+1], saved)
		}
	}
	return nil
}

// Fingerprint returns a short hash (16 hex digits of a SHA-256) of what write writes to its
// writer: the data a run trains and evaluates on, for LoopConfig.DataID.
func Fingerprint(write func(w io.Writer)) string {
	h := sha256.New()
	write(h)
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// SourceState returns src's state as a hex string (for SetSource).
func SourceState(src *rand.PCG) string {
	b, _ := src.MarshalBinary() // a PCG always marshals
	return hex.EncodeToString(b)
}

// SetSource sets src to a state from SourceState.
func SetSource(src *rand.PCG, state string) error {
	b, err := hex.DecodeString(state)
	if err != nil {
		return fmt.Errorf("state %q: %w", state, err)
	}
	return src.UnmarshalBinary(b)
}
