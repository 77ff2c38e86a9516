package train

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/atomicfile"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/safetensors"
)

// Checkpoint names what SaveCheckpoint writes and LoadCheckpoint restores: the values of
// named nodes (the weights, and any other state kept in a node such as moe.Layer.Bias), the
// optimiser's state, and the caller's own strings.
//
// The file is safetensors (https://huggingface.co/docs/safetensors): each node is a tensor
// named by its node name, in its own dtype (F32, F64 or BF16) and shape, in the format of
// Hugging Face's safetensors package (TestCheckpointFile reads it with a parser written from
// the format's description). The optimiser's state is stored
// beside the weights, for Adam as "optimizer.adam.m.<name>" and "optimizer.adam.v.<name>"
// (float32 for bfloat16 weights) and for either optimiser as "optimizer.master.<name>" (the
// float32 master copy of a bfloat16 weight); its step count and constants are in the
// file's string metadata under keys starting with "gomoe.".
//
// Resuming is exact: a run that saves after step k and is loaded into a fresh graph and a
// fresh solver takes steps k+1… with the bits of a run that never stopped, provided the
// rest of the program is deterministic too: keep what the data order needs (a step count, a
// random source's state) in Meta, as the examples do. One thing is not saved: the run counter of
// op.JitterNoise (moe.Config.JitterEps > 0), which a fresh graph starts at 0, so a resumed run
// with router jitter draws the noise of the first run's first steps again, not that of the
// steps it resumes.
//
// The file is read and written by gomoe's safetensors package (the reader moe/hf uses for
// transformers checkpoints): LoadCheckpoint checks the header, then every node and
// optimiser tensor against it, then reads each tensor once into host memory before
// anything is written; SaveCheckpoint streams through a buffered writer.
type Checkpoint struct {
	// Params are the nodes saved and restored, by name: names must be unique and non-empty.
	// Their values may live on the host or, in the gomoecuda build, in GPU memory.
	Params G.Nodes
	// Optimizer is the solver whose state is saved: *Adam, *SGD or nil (weights only).
	Optimizer G.Solver
	// Meta holds the caller's strings (the step, the seed, the configuration), saved in the
	// file's metadata. Keys starting with "gomoe." are reserved.
	Meta map[string]string
	// Check, if not nil, is called by LoadCheckpoint with the file's caller metadata (what
	// Meta saved) once the file is known to be a gomoe checkpoint, before the nodes are
	// checked against it and before anything is written: an error from it loads nothing and
	// is returned. The metadata and the tensors come from the same open of the file, so a
	// caller that checks the run it resumes there cannot load the weights of another save
	// that replaced the file in between. SaveCheckpoint ignores it.
	Check func(meta map[string]string) error
}

const (
	ckptFormat    = "gomoe.format"
	ckptFormatV1  = "gomoe-checkpoint/1"
	ckptOptimizer = "gomoe.optimizer"
	prefixM       = "optimizer.adam.m."
	prefixV       = "optimizer.adam.v."
	prefixMaster  = "optimizer.master."
)

// stDtype is the safetensors dtype of a float32, float64 or bfloat16 tensor.
func stDtype(dt tensor.Dtype) (string, error) {
	switch dt {
	case tensor.Float32:
		return "F32", nil
	case tensor.Float64:
		return "F64", nil
	case bfloat16.Dtype:
		return "BF16", nil
	}
	return "", fmt.Errorf("dtype %v, want float32, float64 or bfloat16", dt)
}

// param is one checked node of a checkpoint.
type param struct {
	name string
	w    *tensor.Dense
	gpu  device.Backend // the device backend of w, nil on the host
}

func checkParams(nodes G.Nodes) ([]param, error) {
	ps := make([]param, 0, len(nodes))
	seen := map[string]bool{}
	for i, n := range nodes {
		if n == nil {
			return nil, fmt.Errorf("param %d is nil", i)
		}
		name := n.Name()
		if name == "" || strings.HasPrefix(name, "optimizer.") || name == "__metadata__" || !utf8.ValidString(name) {
			return nil, fmt.Errorf("param %d has the name %q (want a non-empty UTF-8 name, not \"__metadata__\", not starting with \"optimizer.\")", i, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("two params are named %q", name)
		}
		seen[name] = true
		w, ok := n.Value().(*tensor.Dense)
		if !ok || w == nil {
			return nil, fmt.Errorf("param %q has the value %T, want a *tensor.Dense (give the node a value first)", name, n.Value())
		}
		if w.RequiresIterator() {
			return nil, fmt.Errorf("param %q is a non-contiguous view", name)
		}
		if _, err := stDtype(w.Dtype()); err != nil {
			return nil, fmt.Errorf("param %q: %w", name, err)
		}
		ps = append(ps, param{name: name, w: w, gpu: device.Of(w)})
	}
	return ps, nil
}

// hostSlice returns x (a host slice, a host tensor or a device tensor) as a host slice.
func hostSlice(x any) (any, error) {
	switch s := x.(type) {
	case []float32, []float64:
		return s, nil
	case *tensor.Dense:
		if dev := device.Of(s); dev != nil {
			h, err := dev.Download(s)
			if err != nil {
				return nil, err
			}
			s = h
		}
		if d := hostData(s); d != nil { // the backing slice, for scalar-shaped tensors too
			return d, nil
		}
		return s.Data(), nil
	}
	return nil, fmt.Errorf("optimiser state of type %T", x)
}

func fmtF(x float64) string { return strconv.FormatFloat(x, 'g', -1, 64) }

// SaveCheckpoint writes c to path as a safetensors file. It writes a temporary file in the
// same folder and renames it, so path holds either the old or the new checkpoint, never a
// partial one. Device values are copied to the host through their engine.
func SaveCheckpoint(path string, c Checkpoint) error {
	fail := func(err error) error { return opkit.Wrap(fmt.Sprintf("train: SaveCheckpoint %s", path), err) }
	if path == "" {
		return errors.New("gomoe: train: SaveCheckpoint: the path is empty")
	}
	ps, err := checkParams(c.Params)
	if err != nil {
		return fail(err)
	}
	tensors := make(map[string]safetensors.Tensor, len(ps))
	meta := map[string]string{ckptFormat: ckptFormatV1}
	for _, k := range slices.Sorted(maps.Keys(c.Meta)) { // the first bad key in byte order, every call
		v := c.Meta[k]
		if strings.HasPrefix(k, "gomoe.") {
			return fail(fmt.Errorf("metadata key %q is reserved (starts with \"gomoe.\")", k))
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fail(fmt.Errorf("metadata %q = %q is not UTF-8 (the file's header is JSON)", k, v))
		}
		meta[k] = v
	}
	add := func(name string, x any, shape tensor.Shape) error {
		h, err := hostSlice(x)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		tensors[name] = safetensors.Tensor{Shape: shape.Clone(), Data: h}
		return nil
	}
	for _, p := range ps {
		if err := add(p.name, p.w, p.w.Shape()); err != nil {
			return fail(err)
		}
	}
	var state map[uintptr]*moments
	adam := false
	if n := nilSolver(c.Optimizer); n != "" {
		return fail(fmt.Errorf("optimiser is a nil %s (Optimizer nil saves the weights only)", n))
	}
	switch o := c.Optimizer.(type) {
	case nil:
	case *Adam:
		state, adam = o.state, true
		meta[ckptOptimizer] = "adam"
		meta["gomoe.adam.step"] = strconv.Itoa(o.t)
		meta["gomoe.adam.lr"] = fmtF(o.LR)
		meta["gomoe.adam.beta1"] = fmtF(o.Beta1)
		meta["gomoe.adam.beta2"] = fmtF(o.Beta2)
		meta["gomoe.adam.eps"] = fmtF(o.Eps)
		meta["gomoe.adam.weight_decay"] = fmtF(o.WeightDecay)
		meta["gomoe.adam.max_grad_norm"] = fmtF(o.MaxGradNorm)
	case *SGD:
		state = o.state
		meta[ckptOptimizer] = "sgd"
		meta["gomoe.sgd.lr"] = fmtF(o.LR)
		meta["gomoe.sgd.weight_decay"] = fmtF(o.WeightDecay)
		meta["gomoe.sgd.max_grad_norm"] = fmtF(o.MaxGradNorm)
	default:
		return fail(fmt.Errorf("optimiser %T, want *train.Adam or *train.SGD", c.Optimizer))
	}
	for _, p := range ps {
		st, ok := state[p.w.Uintptr()]
		pr := pair{w: p.w, gpu: p.gpu, n: p.w.Shape().TotalSize(), dtype: p.w.Dtype()}
		if !ok || !st.matches(pr, adam) {
			continue // no state yet, or stale state of another tensor: the next step makes it anew
		}
		for _, s := range []struct {
			prefix string
			x      any
		}{{prefixM, st.m}, {prefixV, st.v}, {prefixMaster, st.w32}} {
			if s.x == nil {
				continue
			}
			if err := add(s.prefix+p.name, s.x, p.w.Shape()); err != nil {
				return fail(err)
			}
		}
	}
	if err := atomicfile.Write(path, func(w io.Writer) error { return safetensors.Write(w, tensors, meta) }); err != nil {
		return fail(err)
	}
	return nil
}

// LoadCheckpoint reads the checkpoint at path into c's nodes (host values in place, device
// values through their engine) and, when c.Optimizer is not nil, into the optimiser: its
// step count, its constants (LR, betas, …, as PyTorch's load_state_dict restores them) and
// its state, which replaces any state it held. It returns the caller's metadata.
//
// Every node must be in the file with its dtype and shape, no two nodes may share memory (the
// same tensor, or overlapping views of one), the file must hold no tensor that is not a node
// or its optimiser state, and a non-nil c.Optimizer must be of the kind saved.
// The optimiser state must be one a step can make: an Adam second moment v, a running mean of
// squares, is never negative (a negative value is an error naming the tensor and the element;
// a NaN or infinite moment or master copy loads, as the steps that made it saved it). All of
// this is checked before anything is written: on such an error no node and no optimiser
// changes. A failed copy to the GPU can leave the nodes before it loaded.
//
// With Optimizer nil, a solver that has stepped these nodes keeps its state: Release it (or
// pass it as Optimizer, so that the file's state replaces its own). Otherwise its next step
// of a bfloat16 node updates the float32 master copy it made before the load and rounds that
// into the node, undoing the load, and float32 and float64 nodes step with the old moments.
func LoadCheckpoint(path string, c Checkpoint) (map[string]string, error) {
	ts, err := safetensors.Open(path) // its errors name the path
	if err != nil {
		return nil, opkit.Wrap("train: LoadCheckpoint", err)
	}
	defer ts.Close()
	meta, err := loadCheckpoint(ts, c)
	if err != nil {
		return nil, opkit.Wrap(fmt.Sprintf("train: LoadCheckpoint %s", path), err)
	}
	return meta, nil
}

// optLoad is the optimiser state read from a file, checked, not yet applied.
type optLoad struct {
	kind              string
	t                 int
	lr, b1, b2, eps   float64
	wd, maxNorm       float64
	m, v, master      map[string]string // param name → tensor name
	hasState, hasMeta bool
}

func loadCheckpoint(ts *safetensors.Tensors, c Checkpoint) (map[string]string, error) {
	fileMeta := ts.Metadata()
	if f := fileMeta[ckptFormat]; f != ckptFormatV1 {
		return nil, fmt.Errorf("not a gomoe checkpoint (metadata %s = %q, want %q)", ckptFormat, f, ckptFormatV1)
	}
	out := map[string]string{}
	for k, v := range fileMeta {
		if !strings.HasPrefix(k, "gomoe.") {
			out[k] = v
		}
	}
	// The caller's check first: a run resumed with other flags is better told so than that a
	// tensor has another shape.
	if c.Check != nil {
		if err := c.Check(maps.Clone(out)); err != nil {
			return nil, err
		}
	}
	ps, err := checkParams(c.Params)
	if err != nil {
		return nil, err
	}
	// Two params sharing memory would take two tensors, the second over the first (and one
	// Adam state, which is keyed by the address): refused as Adam's and SGD's Step refuse it.
	shared := make([]pair, len(ps))
	for i, p := range ps {
		shared[i] = pair{w: p.w, dtype: p.w.Dtype(), wLabel: fmt.Sprintf("param %q", p.name)}
	}
	if err := checkShared(shared); err != nil {
		return nil, err
	}
	fits := func(name string, dt tensor.Dtype, shape tensor.Shape) error {
		want, err := stDtype(dt)
		if err != nil {
			return err
		}
		got, _ := ts.Dtype(name)
		s, _ := ts.Shape(name)
		ok := got == want && len(s) == len(shape)
		for i := 0; ok && i < len(shape); i++ {
			ok = s[i] == shape[i]
		}
		if !ok {
			return fmt.Errorf("tensor %q is %s %v in the file, want %v %v", name, got, s, dt, shape)
		}
		return nil
	}
	used := map[string]bool{}
	for _, p := range ps {
		if _, ok := ts.Dtype(p.name); !ok {
			return nil, fmt.Errorf("no tensor %q in the file", p.name)
		}
		if err := fits(p.name, p.w.Dtype(), p.w.Shape()); err != nil {
			return nil, err
		}
		used[p.name] = true
	}
	// The settings must fit the update of the first param updated in float32.
	ol, err := readOptimizer(fileMeta, c.Optimizer, float32Update(shared))
	if err != nil {
		return nil, err
	}
	byName := map[string]param{}
	for _, p := range ps {
		byName[p.name] = p
	}
	for _, name := range ts.Names() {
		if used[name] {
			continue
		}
		var prefix string
		var into map[string]string
		switch {
		case strings.HasPrefix(name, prefixM):
			prefix, into = prefixM, ol.m
		case strings.HasPrefix(name, prefixV):
			prefix, into = prefixV, ol.v
		case strings.HasPrefix(name, prefixMaster):
			prefix, into = prefixMaster, ol.master
		default:
			return nil, fmt.Errorf("the file holds tensor %q, which is not one of the %d params", name, len(ps))
		}
		p, ok := byName[name[len(prefix):]]
		if !ok {
			return nil, fmt.Errorf("the file holds optimiser state %q of no param", name)
		}
		if c.Optimizer == nil {
			continue // weights only: the optimiser state is not wanted
		}
		if (prefix == prefixM || prefix == prefixV) && ol.kind != "adam" {
			return nil, fmt.Errorf("tensor %q in an %s checkpoint", name, ol.kind)
		}
		dt := p.w.Dtype()
		if dt == bfloat16.Dtype {
			dt = tensor.Float32
		} else if prefix == prefixMaster {
			return nil, fmt.Errorf("tensor %q: a master copy of a %v param", name, p.w.Dtype())
		}
		if err := fits(name, dt, p.w.Shape()); err != nil {
			return nil, err
		}
		into[p.name] = name
	}
	if c.Optimizer != nil {
		for _, p := range ps {
			_, hm := ol.m[p.name]
			_, hv := ol.v[p.name]
			_, hw := ol.master[p.name]
			bf := p.w.Dtype() == bfloat16.Dtype
			switch {
			case ol.kind == "adam" && hm != hv:
				return nil, fmt.Errorf("param %q has one Adam moment but not the other", p.name)
			case ol.kind == "adam" && hm && bf != hw:
				return nil, fmt.Errorf("param %q: Adam moments and master copy disagree (bfloat16: %v, master: %v)", p.name, bf, hw)
			case ol.kind == "adam" && hw && !hm:
				// Adam's next step would drop a master copy without moments for fresh state.
				return nil, fmt.Errorf("param %q has a master copy but no Adam moments", p.name)
			}
		}
	}
	if err := applyCheckpoint(ts, ps, c.Optimizer, ol); err != nil {
		return nil, err
	}
	return out, nil
}

// nilSolver names the type of opt if it is a nil *Adam or *SGD (a non-nil interface whose
// methods would dereference nil), "" otherwise.
func nilSolver(opt G.Solver) string {
	switch o := opt.(type) {
	case *Adam:
		if o == nil {
			return "*train.Adam"
		}
	case *SGD:
		if o == nil {
			return "*train.SGD"
		}
	}
	return ""
}

// readOptimizer checks the optimiser metadata of the file against opt, and its settings as
// a Step of opt checks them (f32: see adamSettings).
func readOptimizer(meta map[string]string, opt G.Solver, f32 string) (*optLoad, error) {
	ol := &optLoad{kind: meta[ckptOptimizer], m: map[string]string{}, v: map[string]string{}, master: map[string]string{}}
	var want string
	if n := nilSolver(opt); n != "" {
		return nil, fmt.Errorf("optimiser is a nil %s (Optimizer nil loads the weights only)", n)
	}
	switch opt.(type) {
	case nil:
		return ol, nil
	case *Adam:
		want = "adam"
	case *SGD:
		want = "sgd"
	default:
		return nil, fmt.Errorf("optimiser %T, want *train.Adam or *train.SGD", opt)
	}
	if ol.kind != want {
		if ol.kind == "" {
			return nil, fmt.Errorf("the file holds no optimiser state (saved without one); load it with Optimizer nil")
		}
		return nil, fmt.Errorf("the file holds %s state, but the optimiser is %s", ol.kind, want)
	}
	num := func(key string, dst *float64) error {
		s, ok := meta["gomoe."+want+"."+key]
		if !ok {
			return fmt.Errorf("metadata gomoe.%s.%s is missing", want, key)
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("metadata gomoe.%s.%s = %q: %w", want, key, s, err)
		}
		*dst = f
		return nil
	}
	keys := []string{"lr", "weight_decay", "max_grad_norm"}
	dsts := []*float64{&ol.lr, &ol.wd, &ol.maxNorm}
	if want == "adam" {
		keys = append(keys, "beta1", "beta2", "eps")
		dsts = append(dsts, &ol.b1, &ol.b2, &ol.eps)
		s := meta["gomoe.adam.step"]
		t, err := strconv.Atoi(s)
		if err != nil || t < 0 || t > MaxAdamSteps {
			return nil, fmt.Errorf("metadata gomoe.adam.step = %q, want a step count in [0, %d]", s, MaxAdamSteps)
		}
		ol.t = t
	}
	for i, k := range keys {
		if err := num(k, dsts[i]); err != nil {
			return nil, err
		}
	}
	err := sgdSettings(f32, ol.lr, ol.wd, ol.maxNorm)
	if want == "adam" {
		err = adamSettings(f32, ol.lr, ol.b1, ol.b2, ol.eps, ol.wd, ol.maxNorm)
	}
	if err != nil {
		return nil, fmt.Errorf("the file's %s settings: %w", want, err)
	}
	return ol, nil
}

// applyCheckpoint reads the checked tensors of ts and writes them into the nodes and the
// optimiser. Every tensor is read into host memory, and the optimiser's device state is
// made, before the first node is written.
func applyCheckpoint(ts *safetensors.Tensors, ps []param, opt G.Solver, ol *optLoad) error {
	// Sorted for a fixed order of reads and device copies.
	order := make([]int, len(ps))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return ps[order[a]].name < ps[order[b]].name })
	vals := make([]any, len(ps))
	for _, i := range order {
		p := ps[i]
		vals[i] = newSlice(p.w.Dtype(), p.w.Shape().TotalSize())
		if err := ts.Read(p.name, vals[i]); err != nil {
			return err
		}
	}
	state := map[uintptr]*moments{}
	release := func() {
		for _, st := range state {
			st.release()
		}
	}
	if opt != nil {
		for _, p := range ps {
			tm, hasM := ol.m[p.name]
			tw, hasW := ol.master[p.name]
			if !hasM && !hasW {
				continue
			}
			st, err := loadMoments(ts, p, ol, tm, ol.v[p.name], tw, hasM, hasW)
			if err != nil {
				release()
				return fmt.Errorf("optimiser state of %q: %w", p.name, err)
			}
			state[p.w.Uintptr()] = st
		}
	}
	for _, i := range order {
		p := ps[i]
		if err := writeInto(p.w, vals[i]); err != nil {
			release()
			return fmt.Errorf("param %q: %w", p.name, err)
		}
	}
	switch o := opt.(type) {
	case *Adam:
		o.Release()
		o.state, o.t = state, ol.t
		o.LR, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.MaxGradNorm = ol.lr, ol.b1, ol.b2, ol.eps, ol.wd, ol.maxNorm
	case *SGD:
		o.Release()
		o.state = state
		o.LR, o.WeightDecay, o.MaxGradNorm = ol.lr, ol.wd, ol.maxNorm
	}
	return nil
}

// newSlice returns a host slice of n elements of dt (float32, float64 or bfloat16).
func newSlice(dt tensor.Dtype, n int) any {
	switch dt {
	case tensor.Float64:
		return make([]float64, n)
	case bfloat16.Dtype:
		return make([]bfloat16.BFloat16, n)
	}
	return make([]float32, n)
}

// writeInto copies the host slice s into the dense w (host or device) of its dtype and size.
func writeInto(w *tensor.Dense, s any) error {
	if dev := device.Of(w); dev != nil {
		return dev.Write(w, tensor.New(tensor.WithShape(w.Shape().TotalSize()), tensor.WithBacking(s)))
	}
	switch d := hostData(w).(type) { // the backing slice, for scalar-shaped tensors too
	case []float32:
		copy(d, s.([]float32))
	case []float64:
		copy(d, s.([]float64))
	case []bfloat16.BFloat16:
		copy(d, s.([]bfloat16.BFloat16))
	default:
		return fmt.Errorf("data of dtype %v", w.Dtype())
	}
	return nil
}

// loadMoments makes the state of p from the file's tensors tm, tv (Adam's moments) and tw
// (the float32 master), each checked (stateValues) before it is copied anywhere.
func loadMoments(ts *safetensors.Tensors, p param, ol *optLoad, tm, tv, tw string, hasM, hasW bool) (*moments, error) {
	n := p.w.Shape().TotalSize()
	dt := tensor.Float32
	if p.w.Dtype() == tensor.Float64 {
		dt = tensor.Float64
	}
	st := &moments{owner: p.w}
	put := func(dst *any, name string, nonNeg bool) error {
		h := newSlice(dt, n)
		if err := ts.Read(name, h); err != nil {
			return err
		}
		if err := stateValues(name, h, nonNeg); err != nil {
			return err
		}
		if p.gpu == nil {
			*dst = h
			return nil
		}
		d, err := p.gpu.Zeros(p.w, dt)
		if err != nil {
			return err
		}
		*dst = d
		return p.gpu.Write(d.(*tensor.Dense), tensor.New(tensor.WithShape(n), tensor.WithBacking(h)))
	}
	if hasW {
		if err := put(&st.w32, tw, false); err != nil {
			st.release()
			return nil, err
		}
	}
	if hasM && ol.kind == "adam" {
		if err := put(&st.m, tm, false); err != nil {
			st.release()
			return nil, err
		}
		if err := put(&st.v, tv, true); err != nil {
			st.release()
			return nil, err
		}
	}
	return st, nil
}

// stateValues checks the optimiser state h ([]float32 or []float64), the file's tensor name,
// for values no step makes: with nonNeg (Adam's second moment v, a running mean of squares) a
// negative one, -Inf included, whose square root the next step would turn into NaN weights.
// NaN and infinite values pass: steps make them from NaN or overflowing gradients (and save
// them), and the weights they belong to load as they are.
func stateValues(name string, h any, nonNeg bool) error {
	if !nonNeg {
		return nil
	}
	switch s := h.(type) {
	case []float32:
		return stateNonNeg(name, s)
	case []float64:
		return stateNonNeg(name, s)
	}
	return nil
}

func stateNonNeg[F float32 | float64](name string, s []F) error {
	for i, x := range s {
		if x < 0 {
			return fmt.Errorf("%s[%d] = %v, want a value >= 0 (a mean of squares)", name, i, x)
		}
	}
	return nil
}
