package train

import (
	"fmt"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Adam is the Adam optimiser (Kingma & Ba), with decoupled weight decay (AdamW) when
// WeightDecay > 0:
//
//	m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
//	w = w − LR·((m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + Eps) + WeightDecay·w)
//
// It implements gorgonia.Solver and updates float32 and float64 weights in place, on the host
// or on the GPU (see the package doc). The moments live beside each weight (host slices or
// device tensors that persist across steps) and are created zero on a weight's first step.
type Adam struct {
	// LR is the learning rate; it may be changed between steps (schedules).
	LR float64
	// Beta1, Beta2 and Eps are Adam's constants (NewAdam: 0.9, 0.999, 1e-8).
	Beta1, Beta2, Eps float64
	// WeightDecay is the decoupled weight decay (0: plain Adam).
	WeightDecay float64

	t     int
	state map[uintptr]*moments // by the weight's data address
}

// moments is Adam's state for one weight: host slices or device tensors.
type moments struct {
	m, v any // []float32, []float64 or device values
}

// NewAdam returns Adam with learning rate lr and the usual constants β1 = 0.9, β2 = 0.999,
// ε = 1e-8.
func NewAdam(lr float64) *Adam {
	return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}
}

// Steps is the number of steps taken.
func (a *Adam) Steps() int { return a.t }

// SGD is plain stochastic gradient descent, w = w − LR·(g + WeightDecay·w), as a
// gorgonia.Solver that updates float32 and float64 weights in place on the host or the GPU.
type SGD struct {
	// LR is the learning rate; it may be changed between steps.
	LR float64
	// WeightDecay is the L2 weight decay.
	WeightDecay float64
}

// pair is one checked (weight, gradient).
type pair struct {
	w, g   *tensor.Dense
	onGPU  bool
	n      int
	dtype  tensor.Dtype
	wLabel string
}

// check validates every (weight, gradient) before any is updated: both dense, contiguous,
// float32 or float64, of one dtype and size, both on the host or both on one GPU.
func check(name string, vgs []G.ValueGrad) ([]pair, error) {
	ps := make([]pair, 0, len(vgs))
	for i, vg := range vgs {
		label := fmt.Sprintf("weight %d", i)
		if n, ok := vg.(*G.Node); ok && n != nil {
			label = fmt.Sprintf("weight %d (%s)", i, n.Name())
		}
		if vg == nil {
			return nil, fmt.Errorf("gomoe: train: %s: %s is nil", name, label)
		}
		wv := vg.Value()
		gv, err := vg.Grad()
		if err != nil {
			return nil, fmt.Errorf("gomoe: train: %s: %s has no gradient: %w", name, label, err)
		}
		w, ok1 := wv.(*tensor.Dense)
		g, ok2 := gv.(*tensor.Dense)
		if !ok1 || !ok2 || w == nil || g == nil {
			return nil, fmt.Errorf("gomoe: train: %s: %s is %T with gradient %T, want *tensor.Dense", name, label, wv, gv)
		}
		if w.RequiresIterator() || g.RequiresIterator() {
			return nil, fmt.Errorf("gomoe: train: %s: %s or its gradient is a non-contiguous view", name, label)
		}
		if w.Dtype() != g.Dtype() || w.Shape().TotalSize() != g.Shape().TotalSize() {
			return nil, fmt.Errorf("gomoe: train: %s: %s is %v %v but its gradient is %v %v", name, label, w.Dtype(), w.Shape(), g.Dtype(), g.Shape())
		}
		if w.Dtype() != tensor.Float32 && w.Dtype() != tensor.Float64 {
			return nil, fmt.Errorf("gomoe: train: %s: %s has dtype %v, want float32 or float64", name, label, w.Dtype())
		}
		dw, dg := device != nil && device.Owns(w), device != nil && device.Owns(g)
		if dw != dg {
			return nil, fmt.Errorf("gomoe: train: %s: %s and its gradient are not both on the GPU (weight on GPU: %v)", name, label, dw)
		}
		if dw {
			if err := device.Same(w, g); err != nil {
				return nil, fmt.Errorf("gomoe: train: %s: %s: %w", name, label, err)
			}
		}
		for _, p := range ps {
			if p.w == w {
				return nil, fmt.Errorf("gomoe: train: %s: %s appears twice (as %s)", name, label, p.wLabel)
			}
		}
		ps = append(ps, pair{w: w, g: g, onGPU: dw, n: w.Shape().TotalSize(), dtype: w.Dtype(), wLabel: label})
	}
	return ps, nil
}

// Step applies one Adam update to every weight. It checks all of them first: on an error
// nothing is updated and the step count is unchanged.
func (a *Adam) Step(vgs []G.ValueGrad) error {
	ps, err := check("Adam", vgs)
	if err != nil {
		return err
	}
	switch {
	case !(a.LR >= 0) || math.IsInf(a.LR, 0):
		return fmt.Errorf("gomoe: train: Adam: learning rate %v", a.LR)
	case !(a.Beta1 >= 0 && a.Beta1 < 1) || !(a.Beta2 >= 0 && a.Beta2 < 1):
		return fmt.Errorf("gomoe: train: Adam: betas %v, %v, want each in [0, 1)", a.Beta1, a.Beta2)
	case !(a.Eps > 0) || !(a.WeightDecay >= 0):
		return fmt.Errorf("gomoe: train: Adam: eps %v and weight decay %v, want eps > 0 and decay >= 0", a.Eps, a.WeightDecay)
	}
	if a.state == nil {
		a.state = map[uintptr]*moments{}
	}
	// Create missing state for all weights first, so an allocation error changes nothing.
	var fresh []uintptr
	for _, p := range ps {
		st, ok := a.state[p.w.Uintptr()]
		if ok && st.matches(p) {
			continue
		}
		st, err := newMoments(p)
		if err != nil {
			for _, k := range fresh {
				a.state[k].release()
				delete(a.state, k)
			}
			return fmt.Errorf("gomoe: train: Adam: %s: %w", p.wLabel, err)
		}
		if old, ok := a.state[p.w.Uintptr()]; ok {
			old.release()
		}
		a.state[p.w.Uintptr()] = st
		fresh = append(fresh, p.w.Uintptr())
	}
	t := a.t + 1
	c1 := 1 - math.Pow(a.Beta1, float64(t))
	c2 := 1 - math.Pow(a.Beta2, float64(t))
	for _, p := range ps {
		st := a.state[p.w.Uintptr()]
		var err error
		switch {
		case p.onGPU:
			err = device.Adam(p.w, p.g, st.m, st.v, a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay)
		case p.dtype == tensor.Float32:
			err = kernels.AdamUpdate(p.w.Float32s(), p.g.Float32s(), st.m.([]float32), st.v.([]float32), a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay)
		default:
			err = kernels.AdamUpdate(p.w.Float64s(), p.g.Float64s(), st.m.([]float64), st.v.([]float64), a.LR, a.Beta1, a.Beta2, a.Eps, c1, c2, a.WeightDecay)
		}
		if err != nil {
			return fmt.Errorf("gomoe: train: Adam: %s: %w", p.wLabel, err)
		}
	}
	a.t = t
	return nil
}

// Release frees the optimiser's state (device memory for GPU weights); the next Step starts
// from zero moments.
func (a *Adam) Release() {
	for _, st := range a.state {
		st.release()
	}
	a.state, a.t = nil, 0
}

func newMoments(p pair) (*moments, error) {
	if p.onGPU {
		m, err := device.Zeros(p.w)
		if err != nil {
			return nil, err
		}
		v, err := device.Zeros(p.w)
		if err != nil {
			device.Release(m)
			return nil, err
		}
		return &moments{m, v}, nil
	}
	if p.dtype == tensor.Float32 {
		return &moments{make([]float32, p.n), make([]float32, p.n)}, nil
	}
	return &moments{make([]float64, p.n), make([]float64, p.n)}, nil
}

// matches reports whether the state fits the weight (its size, dtype or place may change if
// the node was rebound).
func (st *moments) matches(p pair) bool {
	switch m := st.m.(type) {
	case []float32:
		return !p.onGPU && p.dtype == tensor.Float32 && len(m) == p.n
	case []float64:
		return !p.onGPU && p.dtype == tensor.Float64 && len(m) == p.n
	}
	return p.onGPU && device.Matches(st.m, p.w)
}

func (st *moments) release() {
	switch st.m.(type) {
	case []float32, []float64:
		return
	}
	device.Release(st.m)
	device.Release(st.v)
}

// Step applies one SGD update to every weight, after checking all of them.
func (s *SGD) Step(vgs []G.ValueGrad) error {
	ps, err := check("SGD", vgs)
	if err != nil {
		return err
	}
	if !(s.LR >= 0) || math.IsInf(s.LR, 0) || !(s.WeightDecay >= 0) {
		return fmt.Errorf("gomoe: train: SGD: learning rate %v, weight decay %v", s.LR, s.WeightDecay)
	}
	for _, p := range ps {
		var err error
		switch {
		case p.onGPU:
			err = device.SGD(p.w, p.g, s.LR, s.WeightDecay)
		case p.dtype == tensor.Float32:
			err = kernels.SGDUpdate(p.w.Float32s(), p.g.Float32s(), s.LR, s.WeightDecay)
		default:
			err = kernels.SGDUpdate(p.w.Float64s(), p.g.Float64s(), s.LR, s.WeightDecay)
		}
		if err != nil {
			return fmt.Errorf("gomoe: train: SGD: %s: %w", p.wLabel, err)
		}
	}
	return nil
}
