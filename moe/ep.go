package moe

import (
	"fmt"
	"hash/fnv"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/ep"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// NewExpertParallel is New for rank comm.Rank() of an expert-parallel group of N =
// comm.Size() ranks. The router, the expert bias and the shared experts are whole on every
// rank; the routed experts are sharded: this rank's W1 and W2 hold experts
// [r·E/N, (r+1)·E/N) only, with the initial values New gives those experts for the same
// config, so N ranks start from the same model as one rank. E must be divisible by N.
//
// Every rank passes the same cfg, field for field (the first step fails on every rank
// otherwise, even for a field the layer does not use), and builds the same graph, its own
// (Forward refuses a graph that already holds another rank's layer of the same group), and
// calls Forward on its own T tokens (the same T on every rank: a rank with another T makes
// the step fail on every rank); Forward then runs
// collectives (see package ep), so all ranks run their machines together. The layer's Y and
// the gradients of its input and of the local expert weights equal the single-rank layer's on
// the concatenated tokens, for costs that add up over the ranks: a mean over the tokens is
// each rank's sum divided by N·T, not by T. The gradients of the replicated weights
// (Layer.Replicated: router, shared experts) are this rank's share: ep.SumGradients sums them
// over the ranks before the solver step. The balancing losses, Output.Counts and
// UpdateExpertBias see this rank's tokens only (ep.SumCounts sums the counts); in capacity
// mode C is per expert and sending rank; router jitter draws the same noise on every rank.
// See the package documentation, "Expert parallelism".
//
// Initialisation builds the full layer once in a scratch graph to draw the values, so it
// briefly holds all E experts' weights on the host, and this rank's copy with them: both must
// fit in the memory this process may use.
func NewExpertParallel(g *G.ExprGraph, name string, cfg Config, comm ep.Communicator) (*Layer, error) {
	wrap := func(err error) (*Layer, error) { return nil, opkit.Wrap("moe.NewExpertParallel", err) }
	if err := ep.CheckCommunicator(comm); err != nil {
		return wrap(err)
	}
	n, r := comm.Size(), comm.Rank()
	if cfg.Experts%n != 0 {
		return wrap(fmt.Errorf("Experts=%d are not divisible by N=%d ranks", cfg.Experts, n))
	}
	if g == nil {
		return wrap(fmt.Errorf("nil graph"))
	}
	if cfg.Dtype == bfloat16.Dtype {
		// ep.Dispatch and ep.Combine move float32 or float64 rows.
		return wrap(fmt.Errorf("Dtype=%v: expert parallelism takes float32 or float64 layers", cfg.Dtype))
	}
	if err := cfg.Validate(); err != nil {
		return wrap(err)
	}
	if err := cfg.WithDefaults().checkMemoryEP(cfg.Experts / n); err != nil {
		return wrap(err)
	}
	// Every name the layer gives a weight, as New checks them: the weights are copied into g
	// under those names, and Gorgonia takes a user's node of the same name, type and shape
	// (a node "m.w2" of this rank's shape) for the layer's own.
	if err := checkNames(g, "moe.NewExpertParallel", name, cfg.WithDefaults()); err != nil {
		return nil, err
	}
	full, err := New(G.NewGraph(), name, cfg)
	if err != nil {
		return wrap(err)
	}
	el := cfg.Experts / n
	l := &Layer{cfg: full.cfg, name: name, g: g, paths: epPaths{comm, configHash(full.cfg)}}
	// copyNode makes a node of g named like src holding src's value, or (lo >= 0) the experts
	// [lo, hi) of an expert weight [E, ...].
	copyNode := func(src *G.Node, lo, hi int) (*G.Node, error) {
		if src == nil {
			return nil, nil
		}
		v, ok := src.Value().(*tensor.Dense)
		if !ok {
			return nil, fmt.Errorf("%s holds a %T", src.Name(), src.Value())
		}
		shape := v.Shape().Clone()
		from, to := 0, shape.TotalSize()
		if lo >= 0 {
			// Copy only this rank's experts: a slice of a copy of the whole weight would keep
			// all E experts' memory alive on every rank.
			inner := shape.TotalSize() / shape[0]
			from, to = lo*inner, hi*inner
			shape[0] = hi - lo
		}
		var data any
		switch d := v.Data().(type) {
		case []float32:
			data = append([]float32(nil), d[from:to]...)
		case []float64:
			data = append([]float64(nil), d[from:to]...)
		default:
			return nil, fmt.Errorf("%s holds %T", src.Name(), d)
		}
		t := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data))
		return G.NewTensor(g, v.Dtype(), len(shape), G.WithShape(shape...), G.WithName(src.Name()), G.WithValue(t)), nil
	}
	for _, w := range []struct {
		dst    **G.Node
		src    *G.Node
		expert bool
	}{
		{&l.Router, full.Router, false}, {&l.W1, full.W1, true}, {&l.W2, full.W2, true},
		{&l.SharedW1, full.SharedW1, false}, {&l.SharedW2, full.SharedW2, false},
		{&l.Bias, full.Bias, false},
	} {
		lo, hi := -1, 0
		if w.expert {
			lo, hi = r*el, (r+1)*el
		}
		if *w.dst, err = copyNode(w.src, lo, hi); err != nil {
			return wrap(err)
		}
	}
	return l, nil
}

// epPaths shards the routed experts over the ranks of comm.
type epPaths struct {
	comm ep.Communicator
	// cfgHash is a hash of the layer's Config (with its defaults), which every rank's plan
	// checks against the other ranks' (ep.Agree): ranks built from different configurations
	// would hold different replicated weights.
	cfgHash uint32
}

// configHash is the hash epPaths.cfgHash holds.
func configHash(c Config) uint32 {
	h := fnv.New32a()
	fmt.Fprintf(h, "%+v", c.WithDefaults())
	return h.Sum32()
}

// rows is the local plan's: this rank's experts' rows of every rank's tokens.
func (e epPaths) rows(geo kernels.Geometry) (int, error) {
	gl, err := ep.LocalGeometry(geo, e.comm.Size())
	if err != nil {
		return 0, err
	}
	return gl.Rows(), nil
}

// guard builds build's node with an op that aborts comm when it fails (ep.Guard).
func (e epPaths) guard(build func(in ...*G.Node) (*G.Node, error), in ...*G.Node) (*G.Node, error) {
	return ep.Guard(e.comm, build, in...)
}

func (e epPaths) route(ids, planProbs *G.Node, geo kernels.Geometry) (expertRoute, error) {
	p, err := ep.NewPlan(ids, planProbs, geo, e.comm, ep.Agree("layer configuration (moe.Config)", e.cfgHash))
	if err != nil {
		return nil, err
	}
	local, err := p.Local()
	if err != nil {
		return nil, err
	}
	return epRoute{p, local}, nil
}

type epRoute struct {
	p     *ep.Plan
	local *op.Plan
}

func (r epRoute) plan() *op.Plan                      { return r.p.Send }
func (r epRoute) expertPlan() *op.Plan                { return r.local }
func (r epRoute) dispatch(x *G.Node) (*G.Node, error) { return ep.Dispatch(x, r.p) }

// dispatchProbs permutes the probs into the send layout and sends them along as rows of width 1.
func (r epRoute) dispatchProbs(probs *G.Node) (*G.Node, error) {
	pp, err := op.PermuteProbs(probs, r.p.Send)
	if err != nil {
		return nil, err
	}
	if pp, err = G.Reshape(pp, tensor.Shape{r.p.Send.Rows(), 1}); err != nil {
		return nil, err
	}
	if pp, err = ep.DispatchRows(pp, r.p); err != nil {
		return nil, err
	}
	return G.Reshape(pp, tensor.Shape{r.local.Rows()})
}

func (r epRoute) combine(yp, probs *G.Node) (*G.Node, error) { return ep.Combine(yp, probs, r.p) }
