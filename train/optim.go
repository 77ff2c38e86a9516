package train

import (
	"errors"
	"fmt"
	"math"
	"sort"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Adam is the Adam optimiser (Kingma & Ba), with decoupled weight decay (AdamW) when
// WeightDecay > 0:
//
//	m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//	w = w − LR·((m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + Eps) + WeightDecay·w)
//
// It implements gorgonia.Solver and updates float32, float64 and bfloat16 weights in place, on
// the host or on the GPU (see the package doc). The moments live beside each weight (host
// slices or device tensors that persist across steps) and are created zero on a weight's first
// step. The step count t is the solver's, one for all weights (PyTorch keeps one per weight):
// a weight whose moments start later than the others' (added to the params mid-run, rebound,
// or missing from a checkpoint's state) takes its first steps with that t, whose bias
// corrections near 1 no longer undo the moments' zero start: its first step is about
// (1−β1)/sqrt(1−β2) ≈ 3.2 times PyTorch's with the default constants. A bfloat16 weight also
// gets a float32 master copy (made from the weight on its first step): the update runs in
// float32 on the master and the weight is the master rounded.
//
// The update of a float32 or bfloat16 weight takes LR, Eps and WeightDecay rounded to
// float32: Step refuses one beyond math.MaxFloat32 (it made the weights NaN) or one other than
// 0 that rounds to 0 there (an Eps of 0 made them NaN too), naming the first such weight.
type Adam struct {
	// LR is the learning rate; it may be changed between steps (schedules).
	LR float64
	// Beta1, Beta2 and Eps are Adam's constants (NewAdam: 0.9, 0.999, 1e-8).
	Beta1, Beta2, Eps float64
	// WeightDecay is the decoupled weight decay (0: plain Adam).
	WeightDecay float64
	// MaxGradNorm, when > 0, clips the gradients by their global L2 norm before the update
	// (as PyTorch's clip_grad_norm_): see ClipGradNorm. The norm is over the gradients this
	// solver updates: with expert parallelism leave it at 0 and clip with ep.ClipGradNorm.
	MaxGradNorm float64

	t     int
	norm  float64
	state map[uintptr]*moments // by the weight's data address
	gsc   graphScalars
}

// moments is an optimiser's state for one weight: host slices ([]float32 or []float64) or
// device tensors. w32 is the float32 master copy of a bfloat16 weight (nil otherwise); m and
// v are Adam's moments (nil for SGD), float32 for bfloat16 weights. owner is the weight whose
// data address keys the state: holding it keeps that memory from being freed and given to
// another weight, which would find this state under its address and step from it.
type moments struct {
	m, v, w32 any
	owner     *tensor.Dense
}

// NewAdam returns Adam with learning rate lr and the usual constants β1 = 0.9, β2 = 0.999,
// ε = 1e-8.
func NewAdam(lr float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// MaxAdamSteps is the most steps an Adam counts (2³¹−1): a further Step is an error, and so is
// a checkpoint that claims more.
const MaxAdamSteps = math.MaxInt32

// countErr is the error of a step past MaxAdamSteps (eager or replayed), nil before it.
func (a *Adam) countErr() error {
	if a.t >= MaxAdamSteps {
		return fmt.Errorf("gomoe: train: Adam: %d steps taken, the most it counts", a.t)
	}
	return nil
}

// Steps is the number of steps taken.
func (a *Adam) Steps() int {
	if a == nil {
		return 0
	}
	return a.t
}

// GradNorm is the global L2 norm of the gradients of the last update, before clipping (NaN
// when MaxGradNorm is 0: the norm is computed only to clip). Read it after Step returns:
// Step's after runs before the update, when it still holds the step before's norm. After a
// step replayed by GraphStep it reads the norm from the device (it waits for the device).
func (a *Adam) GradNorm() float64 { return a.gsc.norm(a.norm) }

// SGD is plain stochastic gradient descent, w = w − LR·(g + WeightDecay·w), as a
// gorgonia.Solver that updates float32, float64 and bfloat16 weights (through a float32 master
// copy, as Adam) in place on the host or the GPU. As Adam's, its update of float32 and
// bfloat16 weights takes LR and WeightDecay rounded to float32, and Step refuses either
// beyond math.MaxFloat32 or, other than 0, rounding to 0 there.
type SGD struct {
	// LR is the learning rate; it may be changed between steps.
	LR float64
	// WeightDecay is the L2 weight decay.
	WeightDecay float64
	// MaxGradNorm, when > 0, clips the gradients by their global L2 norm before the update:
	// see ClipGradNorm (with expert parallelism, ep.ClipGradNorm instead).
	MaxGradNorm float64

	norm  float64
	state map[uintptr]*moments // master copies of bfloat16 weights
	gsc   graphScalars
}

// pair is one checked (weight, gradient).
type pair struct {
	w, g   *tensor.Dense
	gpu    device.Backend // the device backend of w and g, nil on the host
	n      int
	dtype  tensor.Dtype
	wLabel string
	// sharesGrad: an earlier pair has the same gradient buffer (checkShared). Gorgonia gives
	// the inputs of an Add one gradient: the clip's norm counts it once per weight (the
	// gradient of the cost wrt all the weights), and the clip scales it once.
	sharesGrad bool
}

// check validates every (weight, gradient) before any is updated: both dense, contiguous,
// float32 or float64, of one dtype and size, both on the host or both on one GPU.
func check(name string, vgs []G.ValueGrad) ([]pair, error) {
	ps := make([]pair, 0, len(vgs))
	for i, vg := range vgs {
		label := fmt.Sprintf("weight %d", i)
		if n, ok := vg.(*G.Node); ok {
			if n == nil {
				return nil, fmt.Errorf("gomoe: train: %s: %s is nil", name, label)
			}
			label = fmt.Sprintf("weight %d (%s)", i, n.Name())
		}
		if vg == nil {
			return nil, fmt.Errorf("gomoe: train: %s: %s is nil", name, label)
		}
		wv := vg.Value()
		gv, err := vg.Grad()
		if err != nil {
			return nil, opkit.Wrap(fmt.Sprintf("train: %s: %s has no gradient", name, label), err)
		}
		w, ok1 := wv.(*tensor.Dense)
		g, ok2 := gv.(*tensor.Dense)
		if ok1 && w != nil && gv == nil {
			return nil, fmt.Errorf("gomoe: train: %s: %s has no gradient value: did its gradient node run? (make the machine on the whole graph, or on roots that include the nodes G.Grad returned)", name, label)
		}
		if !ok1 || !ok2 || w == nil || g == nil {
			return nil, fmt.Errorf("gomoe: train: %s: %s is %T with gradient %T, want *tensor.Dense", name, label, wv, gv)
		}
		// An empty *tensor.Dense (no dtype, no data) used to panic below.
		if m := opkit.Missing(w); m != "" {
			return nil, fmt.Errorf("gomoe: train: %s: %s is %s", name, label, m)
		}
		if m := opkit.Missing(g); m != "" {
			return nil, fmt.Errorf("gomoe: train: %s: the gradient of %s is %s", name, label, m)
		}
		if w.Shape().TotalSize() == 0 || g.Shape().TotalSize() == 0 {
			return nil, fmt.Errorf("gomoe: train: %s: %s is %v %v with gradient %v %v, want values with elements", name, label, w.Dtype(), w.Shape(), g.Dtype(), g.Shape())
		}
		if w.RequiresIterator() || g.RequiresIterator() {
			return nil, fmt.Errorf("gomoe: train: %s: %s or its gradient is a non-contiguous view", name, label)
		}
		if w.Dtype() != g.Dtype() || w.Shape().TotalSize() != g.Shape().TotalSize() {
			return nil, fmt.Errorf("gomoe: train: %s: %s is %v %v but its gradient is %v %v", name, label, w.Dtype(), w.Shape(), g.Dtype(), g.Shape())
		}
		if w.Dtype() != tensor.Float32 && w.Dtype() != tensor.Float64 && w.Dtype() != bfloat16.Dtype {
			return nil, fmt.Errorf("gomoe: train: %s: %s has dtype %v, want float32, float64 or bfloat16", name, label, w.Dtype())
		}
		gw, gg := device.Of(w), device.Of(g)
		dw, dg := gw != nil, gg != nil
		if dw != dg {
			return nil, fmt.Errorf("gomoe: train: %s: %s and its gradient are not both on the GPU (weight on GPU: %v)", name, label, dw)
		}
		if dw {
			if err := gw.Same(w, g); err != nil {
				return nil, opkit.Wrap(fmt.Sprintf("train: %s: %s", name, label), err)
			}
		}
		ps = append(ps, pair{w: w, g: g, gpu: gw, n: w.Shape().TotalSize(), dtype: w.Dtype(), wLabel: label})
	}
	if err := checkShared(ps); err != nil {
		return nil, opkit.Wrap(fmt.Sprintf("train: %s", name), err)
	}
	return ps, nil
}

// SharedGradients checks vgs as Adam and SGD do before an update (dense, contiguous float
// weights with gradients of their dtype and size, on the host or one GPU; no weight listed
// twice or overlapping another; no gradient overlapping a weight, or another gradient in
// part) and reports, for each, whether an earlier one has the same gradient buffer: Gorgonia
// gives both inputs of an Add one gradient, which code that changes each buffer once
// (ep.SumGradients, the clip) must handle once.
func SharedGradients(vgs []G.ValueGrad) ([]bool, error) {
	ps, err := check("SharedGradients", vgs)
	if err != nil {
		return nil, err
	}
	shared := make([]bool, len(ps))
	for i, p := range ps {
		shared[i] = p.sharesGrad
	}
	return shared, nil
}

// checkShared checks the memory of the weights and gradients of ps, and marks the pairs whose
// gradient buffer an earlier pair has (sharesGrad): no two weights may overlap (the same
// weight listed twice, or two views of one buffer); no gradient may overlap a weight, its own
// included (an update would change what a later one reads); gradients may be one buffer, but
// not overlap in part (the clip scales each buffer once). A pair without a gradient (g nil:
// LoadCheckpoint's params) has its weight checked alone. One sort and one sweep: a span that
// overlaps any span before it overlaps the one of those that reaches furthest.
func checkShared(ps []pair) error {
	type span struct {
		lo, hi uintptr
		i      int
		grad   bool
	}
	seen := make(map[*tensor.Dense]int, len(ps)) // empty weights listed twice have no span
	spans := make([]span, 0, 2*len(ps))
	for i, p := range ps {
		if j, ok := seen[p.w]; ok {
			return fmt.Errorf("%s appears twice (as %s, or shares its memory)", p.wLabel, ps[j].wLabel)
		}
		seen[p.w] = i
		if s := (span{p.w.Uintptr(), p.w.Uintptr() + p.w.MemSize(), i, false}); s.hi > s.lo {
			spans = append(spans, s)
		}
		if p.g == nil {
			continue
		}
		if s := (span{p.g.Uintptr(), p.g.Uintptr() + p.g.MemSize(), i, true}); s.hi > s.lo {
			spans = append(spans, s)
		}
	}
	sort.Slice(spans, func(a, b int) bool {
		x, y := spans[a], spans[b]
		return x.lo < y.lo || x.lo == y.lo && (x.hi < y.hi || x.hi == y.hi && (x.i < y.i || x.i == y.i && !x.grad))
	})
	var top span // of the spans so far, the one that reaches furthest
	for k, s := range spans {
		if k > 0 && s.lo < top.hi {
			first, second := ps[min(s.i, top.i)].wLabel, ps[max(s.i, top.i)].wLabel
			switch {
			case s.grad && top.grad && s.lo == top.lo && s.hi == top.hi:
				ps[s.i].sharesGrad = true // top, the group's first, has the lowest index
				continue
			case s.grad && top.grad:
				return fmt.Errorf("the gradients of %s and %s share memory in part", first, second)
			case !s.grad && !top.grad:
				return fmt.Errorf("%s appears twice (as %s, or shares its memory)", second, first)
			case s.grad:
				return fmt.Errorf("the gradient of %s shares memory with %s", ps[s.i].wLabel, ps[top.i].wLabel)
			default:
				return fmt.Errorf("the gradient of %s shares memory with %s", ps[top.i].wLabel, ps[s.i].wLabel)
			}
		}
		if k == 0 || s.hi > top.hi {
			top = s
		}
	}
	return nil
}

// adamSettings checks Adam's settings (Step, a GraphStep replay and LoadCheckpoint); f32
// names the first weight whose update runs in float32 ("" when none: see fitsFloat32).
func adamSettings(f32 string, lr, b1, b2, eps, wd, maxNorm float64) error {
	switch {
	case !(b1 >= 0 && b1 < 1) || !(b2 >= 0 && b2 < 1):
		return fmt.Errorf("betas %v, %v, want each in [0, 1)", b1, b2)
	case !(eps > 0) || math.IsInf(eps, 0):
		return fmt.Errorf("eps %v, want a finite eps > 0", eps)
	}
	if err := sgdSettings(f32, lr, wd, maxNorm); err != nil {
		return err
	}
	return fitsFloat32(f32, "eps", eps, "the step of a zero moment would be 0/0 = NaN")
}

// sgdSettings checks the settings SGD and Adam share (Step, a GraphStep replay and
// LoadCheckpoint); f32 is as adamSettings's.
func sgdSettings(f32 string, lr, wd, maxNorm float64) error {
	switch {
	case !(lr >= 0) || math.IsInf(lr, 0):
		return fmt.Errorf("learning rate %v, want a finite value >= 0", lr)
	case !(wd >= 0) || math.IsInf(wd, 0):
		return fmt.Errorf("weight decay %v, want a finite value >= 0", wd)
	case !(maxNorm >= 0) || math.IsInf(maxNorm, 0):
		return fmt.Errorf("MaxGradNorm %v, want a finite value >= 0 (0: no clipping)", maxNorm)
	}
	if err := fitsFloat32(f32, "learning rate", lr, "the weights would not move"); err != nil {
		return err
	}
	return fitsFloat32(f32, "weight decay", wd, "the weights would not decay")
}

// fitsFloat32 checks a finite setting x >= 0 (named name) that the update of a float32 weight,
// or of a bfloat16 weight's float32 master copy, rounds to float32 (on the host and on the
// GPU alike), as kernels' router scales are checked: beyond float32 it is +Inf there (a rate
// or a weight decay of +Inf makes 0·Inf = NaN of a zero gradient or weight), and a value
// other than 0 that rounds to 0 is an error too (why says what it would do). f32 names the
// first such weight; "" (every weight float64, whose update takes the settings as they are)
// checks nothing. The betas need no check: their 1−β are taken in float64 before rounding,
// and so are Adam's bias corrections.
func fitsFloat32(f32, name string, x float64, why string) error {
	switch {
	case f32 == "":
	case math.IsInf(float64(float32(x)), 0):
		return fmt.Errorf("%s %v does not fit the float32 update of %s (at most %g)", name, x, f32, math.MaxFloat32)
	case float32(x) == 0 && x != 0:
		return fmt.Errorf("%s %v rounds to 0 in the float32 update of %s (%s)", name, x, f32, why)
	}
	return nil
}

// inFloat32 reports whether the update of a weight of dtype dt runs in float32 (a float32
// weight, or a bfloat16 weight through its float32 master copy), so that the settings must fit
// float32 (fitsFloat32).
func inFloat32(dt tensor.Dtype) bool { return dt == tensor.Float32 || dt == bfloat16.Dtype }

// float32Update names the first weight of ps whose update runs in float32, "" when there is
// none.
func float32Update(ps []pair) string {
	for _, p := range ps {
		if inFloat32(p.dtype) {
			return p.wLabel
		}
	}
	return ""
}

// Step applies one Adam update to every weight. It checks all of them (and makes missing
// state) first: on a bad input nothing is updated and the step count is unchanged. An error
// from the update itself (a failed kernel launch) can leave the weights before it updated.
func (a *Adam) Step(vgs []G.ValueGrad) error {
	if a == nil {
		return errors.New("gomoe: train: Step on a nil *Adam (make it with NewAdam)")
	}
	ps, err := check("Adam", vgs)
	if err != nil {
		return err
	}
	if err := adamSettings(float32Update(ps), a.LR, a.Beta1, a.Beta2, a.Eps, a.WeightDecay, a.MaxGradNorm); err != nil {
		return opkit.Wrap("train: Adam", err)
	}
	if err := a.countErr(); err != nil {
		return err
	}
	if a.state, a.norm, err = stateAndClip(a.state, a.norm, ps, true, &a.gsc, a.MaxGradNorm, 7); err != nil {
		return opkit.Wrap("train: Adam", err)
	}
	t := a.t + 1
	c1, c2 := a.corrections(t)
	for _, p := range ps {
		st := a.state[p.w.Uintptr()]
		var err error
		switch {
		case p.gpu != nil:
			err = p.gpu.Adam(p.w, p.g, st.w32, st.m, st.v, a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay, a.gsc.arg())
		case p.dtype == bfloat16.Dtype:
			err = kernels.AdamUpdateBF16(bf16Data(p.w), bf16Data(p.g), st.w32.([]float32), st.m.([]float32), st.v.([]float32), a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay)
		case p.dtype == tensor.Float32:
			err = kernels.AdamUpdate(p.w.Float32s(), p.g.Float32s(), st.m.([]float32), st.v.([]float32), a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay)
		default:
			err = kernels.AdamUpdate(p.w.Float64s(), p.g.Float64s(), st.m.([]float64), st.v.([]float64), a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay)
		}
		if err != nil {
			return opkit.Wrap(fmt.Sprintf("train: Adam: %s", p.wLabel), err)
		}
	}
	a.t = t
	return nil
}

// Release frees the optimiser's state (device memory for GPU weights); the next Step starts
// from zero moments. State of weights no longer passed to Step is kept until Release, and
// so is their memory (the state is keyed by it: see moments).
func (a *Adam) Release() {
	if a == nil {
		return
	}
	for _, st := range a.state {
		st.release()
	}
	a.gsc.release()
	a.state, a.t = nil, 0
}

// corrections are Adam's bias corrections 1−β1^t and 1−β2^t of step t.
func (a *Adam) corrections(t int) (c1, c2 float64) {
	return 1 - math.Pow(a.Beta1, float64(t)), 1 - math.Pow(a.Beta2, float64(t))
}

// missingState returns the weights of ps whose state (Adam's moments, or SGD's float32 master
// copy of a bfloat16 weight) is missing from state or stale: those ensure makes.
func missingState(state map[uintptr]*moments, ps []pair, adam bool) []pair {
	var due []pair
	for _, p := range ps {
		if !adam && p.dtype != bfloat16.Dtype {
			continue
		}
		if st, ok := state[p.w.Uintptr()]; ok && st.matches(p, adam) {
			continue
		}
		due = append(due, p)
	}
	return due
}

// stateAndClip makes the state missing from state for the weights of ps (newState) and clips
// their gradients to maxNorm (gsc.clip, at as it takes it); only when both succeed does it
// install the new state and return the new norm. On an error it returns state and norm as
// they were and puts gsc's record of where the norm is back: a failed step changes neither
// the solver's state nor GradNorm.
func stateAndClip(state map[uintptr]*moments, norm float64, ps []pair, adam bool, gsc *graphScalars, maxNorm float64, at int) (map[uintptr]*moments, float64, error) {
	fresh, err := newState(state, ps, adam)
	if err != nil {
		return state, norm, err
	}
	onDev := gsc.normOnDev
	n, err := gsc.clip(ps, maxNorm, at)
	if err != nil {
		fresh.drop()
		gsc.normOnDev = onDev
		return state, norm, err
	}
	return fresh.install(state), n, nil
}

// freshState is the state a step makes for the weights of ps whose state is missing or stale
// (Adam's moments when adam, and a master copy for bfloat16 weights), not yet in the
// optimiser's map: install puts it there once the step can no longer fail, drop frees it.
type freshState []struct {
	k  uintptr
	st *moments
}

// newState makes the state missing from state for the weights of ps; on an error it frees
// what it made.
func newState(state map[uintptr]*moments, ps []pair, adam bool) (freshState, error) {
	// The weights whose state is missing or stale (nil, and no allocation, on the usual step
	// where all state exists), and the host memory their new state takes: it must fit, since a
	// failed allocation is fatal, not an error.
	due := missingState(state, ps, adam)
	var host float64
	for _, p := range due {
		if p.gpu == nil {
			host += float64(p.n) * hostStateBytes(p.dtype, adam)
		}
	}
	if err := hostmem.Check("the optimiser's state (moments and float32 master copies)", host); err != nil {
		return nil, err
	}
	var fresh freshState
	for _, p := range due {
		st, err := newMoments(p, adam)
		if err != nil {
			fresh.drop()
			return nil, fmt.Errorf("%s: %w", p.wLabel, err)
		}
		fresh = append(fresh, struct {
			k  uintptr
			st *moments
		}{p.w.Uintptr(), st})
	}
	return fresh, nil
}

// install puts the fresh state into state (made if nil), freeing the stale state it replaces,
// and returns state.
func (f freshState) install(state map[uintptr]*moments) map[uintptr]*moments {
	if state == nil {
		state = map[uintptr]*moments{}
	}
	for _, x := range f {
		if old, ok := state[x.k]; ok {
			old.release()
		}
		state[x.k] = x.st
	}
	return state
}

// drop frees the fresh state of a step that failed.
func (f freshState) drop() {
	for _, x := range f {
		x.st.release()
	}
}

// hostStateBytes is the host state newMoments makes per element of a weight of dtype dt: two
// moments (float32 for bfloat16 weights) when adam, and a float32 master copy of a bfloat16
// weight.
func hostStateBytes(dt tensor.Dtype, adam bool) float64 {
	var b float64
	if dt == bfloat16.Dtype {
		b, dt = 4, tensor.Float32
	}
	if adam {
		b += 2 * float64(dt.Size())
	}
	return b
}

// newMoments makes zero moments (when adam) and, for a bfloat16 weight, its float32 master.
func newMoments(p pair, adam bool) (*moments, error) {
	st := &moments{owner: p.w}
	dt := p.dtype
	if dt == bfloat16.Dtype {
		dt = tensor.Float32
	}
	if p.gpu != nil {
		if p.dtype == bfloat16.Dtype {
			w32, err := p.gpu.Master(p.w)
			if err != nil {
				return nil, err
			}
			st.w32 = w32
		}
		if adam {
			var err error
			if st.m, err = p.gpu.Zeros(p.w, dt); err == nil {
				st.v, err = p.gpu.Zeros(p.w, dt)
			}
			if err != nil {
				st.release()
				return nil, err
			}
		}
		return st, nil
	}
	if p.dtype == bfloat16.Dtype {
		w32 := make([]float32, p.n)
		if err := bfloat16.ToFloat32s(w32, bf16Data(p.w)); err != nil {
			return nil, err
		}
		st.w32 = w32
	}
	if adam {
		if dt == tensor.Float32 {
			st.m, st.v = make([]float32, p.n), make([]float32, p.n)
		} else {
			st.m, st.v = make([]float64, p.n), make([]float64, p.n)
		}
	}
	return st, nil
}

// matches reports whether the state fits the weight (its size, dtype or place may change if
// the node was rebound).
func (st *moments) matches(p pair, adam bool) bool {
	dt := p.dtype
	if dt == bfloat16.Dtype {
		dt = tensor.Float32
	}
	fits := func(x any) bool {
		switch s := x.(type) {
		case nil:
			return false
		case []float32:
			return p.gpu == nil && dt == tensor.Float32 && len(s) == p.n
		case []float64:
			return p.gpu == nil && dt == tensor.Float64 && len(s) == p.n
		}
		return p.gpu != nil && p.gpu.Matches(x, p.w, dt)
	}
	if p.dtype == bfloat16.Dtype && !fits(st.w32) {
		return false
	}
	return !adam || (fits(st.m) && fits(st.v))
}

func (st *moments) release() {
	for _, x := range []any{st.m, st.v, st.w32} {
		switch x.(type) {
		case nil, []float32, []float64:
			continue
		}
		if d, ok := x.(*tensor.Dense); ok {
			if dev := device.Of(d); dev != nil {
				dev.Release(x)
			}
		}
	}
}

// Step applies one SGD update to every weight, after checking all of them.
func (s *SGD) Step(vgs []G.ValueGrad) error {
	if s == nil {
		return errors.New("gomoe: train: Step on a nil *SGD")
	}
	ps, err := check("SGD", vgs)
	if err != nil {
		return err
	}
	if err := sgdSettings(float32Update(ps), s.LR, s.WeightDecay, s.MaxGradNorm); err != nil {
		return opkit.Wrap("train: SGD", err)
	}
	if s.state, s.norm, err = stateAndClip(s.state, s.norm, ps, false, &s.gsc, s.MaxGradNorm, 2); err != nil {
		return opkit.Wrap("train: SGD", err)
	}
	for _, p := range ps {
		st := s.state[p.w.Uintptr()]
		var err error
		switch {
		case p.gpu != nil:
			var w32 any
			if st != nil {
				w32 = st.w32
			}
			err = p.gpu.SGD(p.w, p.g, w32, s.LR, s.WeightDecay, s.gsc.arg())
		case p.dtype == bfloat16.Dtype:
			err = kernels.SGDUpdateBF16(bf16Data(p.w), bf16Data(p.g), st.w32.([]float32), s.LR, s.WeightDecay)
		case p.dtype == tensor.Float32:
			err = kernels.SGDUpdate(p.w.Float32s(), p.g.Float32s(), s.LR, s.WeightDecay)
		default:
			err = kernels.SGDUpdate(p.w.Float64s(), p.g.Float64s(), s.LR, s.WeightDecay)
		}
		if err != nil {
			return opkit.Wrap(fmt.Sprintf("train: SGD: %s", p.wLabel), err)
		}
	}
	return nil
}

// GradNorm is the global L2 norm of the gradients of the last update, before clipping (NaN
// when MaxGradNorm is 0). Read it after Step returns: Step's after runs before the update.
// After a step replayed by GraphStep it reads the norm from the device (it waits for the
// device).
func (s *SGD) GradNorm() float64 { return s.gsc.norm(s.norm) }

// Release frees the master copies of bfloat16 weights (device memory for GPU weights).
func (s *SGD) Release() {
	if s == nil {
		return
	}
	for _, st := range s.state {
		st.release()
	}
	s.gsc.release()
	s.state = nil
}
