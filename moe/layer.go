package moe

import (
	"fmt"
	"math"
	"math/rand"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
	"github.com/gomoe/gomoe/op"
)

// Layer is a Mixture-of-Experts layer in one Gorgonia graph: a router, E routed expert FFNs
// held as stacked weights for the grouped matmul, and optional shared experts. Build it with
// New and call Forward once per input node.
type Layer struct {
	cfg  Config
	name string
	g    *G.ExprGraph

	// Router is the router weight [H,E] (RouterDtype): logits = x·Router.
	Router *G.Node
	// W1 is each expert's input projection: [E,H,2F] for SwiGLU, with the gate projection in
	// columns 0..F-1 and the up projection in columns F..2F-1 of each expert's [H,2F] matrix
	// (one grouped matmul computes both, as Megatron's fc1 and transformers' gate_up_proj);
	// [E,H,F] for GELU.
	W1 *G.Node
	// W2 [E,F,H] is each expert's output projection.
	W2 *G.Node
	// SharedW1 [H,2S] (gate and up side by side, as W1; [H,S] for GELU) and SharedW2 [S,H]
	// are the shared experts' weights (S = Config.SharedFFN), nil without shared experts.
	SharedW1, SharedW2 *G.Node
	// Bias is the expert bias [E] (RouterDtype) used for selection only, nil without
	// Config.ExpertBias. It is not learnable: UpdateExpertBias changes its value in place.
	Bias *G.Node

	forwards int64
	// paths moves the tokens to the routed experts and back (see paths.go): one rank, or
	// expert parallel (NewExpertParallel).
	paths expertPaths
}

// expertPaths is l.paths, or localPaths for a layer of one rank (New leaves paths nil).
func (l *Layer) expertPaths() expertPaths {
	if l.paths == nil {
		return localPaths{}
	}
	return l.paths
}

// Output is what Forward returns. The loss nodes are scalars of the layer's Dtype (float32
// for a bfloat16 layer), already multiplied by their coefficients, so a training script adds
// Loss (or the parts it wants) to its cost.
type Output struct {
	// Y [T,H] is the layer output (routed experts combined, plus the shared experts); it has
	// the input's shape [B,S,H] for a 3-D input.
	Y *G.Node
	// AuxLoss is AuxLossCoeff times the micro-batch load-balancing loss, nil if the
	// coefficient is 0.
	AuxLoss *G.Node
	// SeqAuxLoss is SeqAuxLossCoeff times the sequence-wise load-balancing loss, nil if the
	// coefficient is 0.
	SeqAuxLoss *G.Node
	// ZLoss is ZLossCoeff times the router z-loss, nil if the coefficient is 0.
	ZLoss *G.Node
	// Loss is the sum of the non-nil weighted losses above, a zero scalar constant (of the
	// losses' dtype) if all are nil, never nil.
	Loss *G.Node
	// Counts [E] int32 is the number of tokens each expert processes in this step (after
	// capacity drops). After a run, pass CountsValue (or a G.Read of it) to Stats or
	// UpdateExpertBias.
	Counts *G.Node
	// Logits [T,E] are the router logits (RouterDtype).
	Logits *G.Node
	// IDs [T,K] int32 are the experts each token chose (before capacity drops).
	IDs *G.Node
	// Probs [T,K] are the combine weights of the chosen experts (RouterDtype, after the
	// scaling factor). Dropped pairs keep their prob here but do not contribute to Y.
	Probs *G.Node
	// Plan is the routing plan the experts ran with.
	Plan *op.Plan
}

// CountsValue is the value of Counts after the last run of the machine (nil before any run),
// so there is no need for a G.Read of Counts. On the GPU it is a device value, valid until
// the step's buffers are recycled (train.Step recycles them after its after callback; Stats
// copies the value to the host).
func (o *Output) CountsValue() G.Value {
	if o == nil || o.Counts == nil {
		return nil
	}
	return o.Counts.Value()
}

// New adds the weights of an MoE layer described by cfg to g and returns the layer. name
// prefixes every weight's node name ("name.router", "name.w1", ...) and must be unique in g.
// The weights are initialised from a normal distribution with standard deviation
// 1/sqrt(fan-in), from a source seeded with cfg.Seed.
func New(g *G.ExprGraph, name string, cfg Config) (*Layer, error) {
	if g == nil {
		return nil, fmt.Errorf("gomoe: moe.New: nil graph")
	}
	if name == "" {
		return nil, fmt.Errorf("gomoe: moe.New: empty layer name")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	if err := cfg.checkMemory(); err != nil {
		return nil, err
	}
	if err := checkNames(g, "moe.New", name, cfg); err != nil {
		return nil, err
	}
	l := &Layer{cfg: cfg, name: name, g: g}
	rng := rand.New(rand.NewSource(cfg.Seed))
	H, F, E := cfg.Hidden, cfg.FFN, cfg.Experts
	l.Router = l.drawn(rng, cfg.RouterDtype, "router", H, H, E)
	l.W1 = l.inWeight(rng, "w1", F, E, H)
	l.W2 = l.drawn(rng, cfg.Dtype, "w2", F, E, F, H)
	if S := cfg.SharedFFN; S > 0 {
		l.SharedW1 = l.inWeight(rng, "shared.w1", S, H)
		l.SharedW2 = l.drawn(rng, cfg.Dtype, "shared.w2", S, S, H)
	}
	if cfg.ExpertBias {
		l.Bias = G.NewVector(g, cfg.RouterDtype, G.WithShape(E), G.WithName(name+".expert_bias"),
			G.WithValue(tensor.New(tensor.Of(cfg.RouterDtype), tensor.WithShape(E))))
	}
	return l, nil
}

// checkNames reports a node of g that has a name the layer would give one of its weights
// (cfg with defaults): Gorgonia takes an input node of the same name, type and shape for the
// same node. fn names the caller in the error.
func checkNames(g *G.ExprGraph, fn, name string, cfg Config) error {
	if len(g.ByName(name+".router")) > 0 {
		return fmt.Errorf("gomoe: %s: the graph already has a layer named %q", fn, name)
	}
	// Every other name the layer gives a node: Gorgonia takes an input node of the same name,
	// type and shape for the same node (the layer's W2 was a user's node "m.w2", zeros and
	// all), and a layer "m.shared" beside a layer "m" with shared experts doubled names that
	// only a checkpoint, after training, refused.
	names := []string{"w1", "w2"}
	if cfg.SharedFFN > 0 {
		names = append(names, "shared.w1", "shared.w2")
	}
	if cfg.ExpertBias {
		names = append(names, "expert_bias")
	}
	for _, n := range names {
		if len(g.ByName(name+"."+n)) > 0 {
			return fmt.Errorf("gomoe: %s: the graph already has a node named %q, the name of layer %q's %s", fn, name+"."+n, name, n)
		}
	}
	return nil
}

// inWeight makes an input projection of shape [lead..., f] (lead = E, H for the experts, H for
// the shared experts), N(0, 1/H): for SwiGLU the gate values are drawn first and the up values
// second, and each row holds its f gate values, then its f up values ([lead..., 2f]); for GELU
// [lead..., f].
func (l *Layer) inWeight(rng *rand.Rand, suffix string, f int, lead ...int) *G.Node {
	g := int(l.cfg.inWidth()) // blocks of f per row: gate (and up)
	return l.weight(rng, l.cfg.Dtype, suffix, l.cfg.Hidden, g, append(lead, g*f)...)
}

// drawn makes a learnable node of the given shape and dtype from N(0, 1/fanIn), in order.
func (l *Layer) drawn(rng *rand.Rand, dt tensor.Dtype, suffix string, fanIn int, shape ...int) *G.Node {
	return l.weight(rng, dt, suffix, fanIn, 1, shape...)
}

// weight makes a learnable node of the given shape and dtype from N(0, 1/fanIn), each value
// rounded once to dt, allocating nothing but the weight itself (and one row of float64s). The
// tensor is viewed as rows of g blocks of f = shape[last]/g columns, and the values are drawn
// block by block: block 0 of every row in row order, then block 1, ... (g = 1: element order).
func (l *Layer) weight(rng *rand.Rand, dt tensor.Dtype, suffix string, fanIn, g int, shape ...int) *G.Node {
	n := 1
	for _, s := range shape {
		n *= s
	}
	w := shape[len(shape)-1]
	rows, f := n/w, w/g
	std := 1 / math.Sqrt(float64(fanIn))
	row := make([]float64, f)
	var backing any
	var put func(dst int)
	switch dt {
	case tensor.Float32:
		b := make([]float32, n)
		put = func(dst int) {
			for c, v := range row {
				b[dst+c] = float32(v)
			}
		}
		backing = b
	case bfloat16.Dtype:
		b := make([]bfloat16.BFloat16, n)
		put = func(dst int) {
			for c, v := range row {
				b[dst+c] = bfloat16.FromFloat64(v)
			}
		}
		backing = b
	default:
		b := make([]float64, n)
		put = func(dst int) { copy(b[dst:dst+f], row) }
		backing = b
	}
	for half := 0; half < g; half++ {
		for r := 0; r < rows; r++ {
			for c := range row {
				row[c] = rng.NormFloat64() * std
			}
			put(r*w + half*f)
		}
	}
	d := tensor.New(tensor.WithShape(shape...), tensor.WithBacking(backing))
	return G.NewTensor(l.g, dt, len(shape), G.WithShape(shape...), G.WithName(l.name+"."+suffix), G.WithValue(d))
}

// Config returns the layer's config with its defaults filled in.
func (l *Layer) Config() Config {
	if l == nil {
		return Config{}
	}
	return l.cfg
}

// Learnables returns the layer's trainable weights, those the optimiser updates: the router,
// the expert weights and the shared experts' weights (not the expert bias, which
// UpdateExpertBias updates: State holds both).
func (l *Layer) Learnables() G.Nodes {
	if l == nil || l.Router == nil { // nil, or a zero Layer{} (not made by New)
		return nil
	}
	return append(G.Nodes{l.Router, l.W1, l.W2}, l.shared()...)
}

// shared returns the shared experts' weights, if any.
func (l *Layer) shared() G.Nodes {
	if l.SharedW1 == nil {
		return nil
	}
	return G.Nodes{l.SharedW1, l.SharedW2}
}

// State returns what a copy of the trained layer needs: Learnables and, with
// Config.ExpertBias, Bias. Share it with an evaluation layer of the same config (G.Let node by
// node) and save it in a train.Checkpoint's Params; without the bias, an ExpertBias layer
// would route with its initial zero bias.
func (l *Layer) State() G.Nodes {
	ns := l.Learnables()
	if l != nil && l.Bias != nil {
		ns = append(ns, l.Bias)
	}
	return ns
}

// Replicated returns the weights that every rank of an expert-parallel layer holds whole:
// the router and the shared experts' weights. Each rank's gradient of them is its own
// tokens' share; ep.SumGradients(comm, layer.Replicated()...) adds them over the ranks before
// the solver's step. (The routed experts' W1 and W2 are sharded: their gradients are whole.)
func (l *Layer) Replicated() G.Nodes {
	if l == nil || l.Router == nil {
		return nil
	}
	return append(G.Nodes{l.Router}, l.shared()...)
}

// Forward applies the layer to x [T,H] (the layer's Dtype) and returns the output, the
// weighted auxiliary losses and the step statistics:
//
//	logits = x·Router                      (RouterDtype; x·jitter first if JitterEps > 0)
//	ids    = top-K experts per token        (by selection score, within the kept groups: Config.Groups)
//	probs  = the chosen experts' weights    (see Config.Score and Config.PreSoftmax) · ScalingFactor
//	Y      = Σ_k probs[t,k]·Expert_ids[t,k](x[t])  + SharedFFN(x)
//
// computed as route → permute → grouped expert FFN → combine-unpermute.
//
// x may also be [B,S,H] (B sequences of S tokens): the layer routes its T = B·S tokens as
// one [T,H] matrix and Y has x's shape [B,S,H]; Logits, IDs and Probs stay per token [T,·].
// With SeqAuxLossCoeff, S must be Config.SeqLen.
func (l *Layer) Forward(x *G.Node) (*Output, error) {
	out, err := l.apply(x, false)
	if err != nil {
		return nil, err
	}
	l.forwards++
	return out, nil
}

// Infer is Forward for evaluation and inference: the same routing and experts, with no
// router jitter, no balancing losses and no z-loss (AuxLoss, SeqAuxLoss and ZLoss are nil,
// Loss is a zero scalar), and the capacity of Config.EvalCapacityFactor and
// Config.MinCapacity (see Config.EvalCapacity). It builds forward ops only: run it on a
// machine without gradients (a tape machine without G.Grad, or a lisp machine with
// G.ExecuteFwdOnly), in the training graph (run only its nodes with a machine on
// g.SubgraphRoots(out.Y)) or in a graph of its own. x is [T,H] or [B,S,H], as for Forward.
func (l *Layer) Infer(x *G.Node) (*Output, error) { return l.apply(x, true) }

// apply checks x and builds the layer's ops on it, for Forward (eval false) or Infer.
func (l *Layer) apply(x *G.Node, eval bool) (*Output, error) {
	if l == nil || l.g == nil || l.Router == nil {
		what := "Forward"
		if eval {
			what = "Infer"
		}
		return nil, fmt.Errorf("gomoe: moe: %s on a nil or zero Layer (make it with moe.New or moe.NewExpertParallel)", what)
	}
	c := l.cfg
	wrap := func(err error) (*Output, error) { return nil, opkit.Wrap(fmt.Sprintf("moe %s", l.name), err) }
	if x == nil {
		return wrap(fmt.Errorf("input is nil"))
	}
	if x.Graph() != l.g {
		return wrap(fmt.Errorf("input %q is not in the layer's graph", x.Name()))
	}
	s := x.Shape()
	if (s.Dims() != 2 && s.Dims() != 3) || s[s.Dims()-1] != c.Hidden {
		return wrap(fmt.Errorf("input has shape %v, want (T, H=%d) or (B, S, H=%d)", s, c.Hidden, c.Hidden))
	}
	if x.Dtype() != c.Dtype {
		return wrap(fmt.Errorf("input has dtype %v, want %v", x.Dtype(), c.Dtype))
	}
	T := s[0]
	if s.Dims() == 3 {
		if s[0] < 1 || s[1] < 1 || s[0] > kernels.MaxRows/s[1] {
			return wrap(fmt.Errorf("input has shape %v: B·S must be between 1 and %d tokens", s, kernels.MaxRows))
		}
		T = s[0] * s[1]
	}
	factor := c.CapacityFactor
	if eval {
		factor = c.evalFactor()
	}
	geo, err := c.geometry(T, factor)
	if err != nil {
		return wrap(err)
	}
	// The routed rows' activations must fit in memory: this rank's rows, which with expert
	// parallelism are its experts' rows of every rank's tokens.
	rows, err := l.expertPaths().rows(geo)
	if err != nil {
		return wrap(err)
	}
	if err := c.checkRows(T, rows); err != nil {
		return wrap(err)
	}
	if !eval && c.SeqAuxLossCoeff > 0 && s.Dims() == 3 && s[1] != c.SeqLen {
		// The loss cuts the T tokens into sequences of SeqLen: with another S they would cross
		// the input's own sequences (or split them), silently.
		return wrap(fmt.Errorf("input has shape %v, sequences of S=%d tokens, but the sequence-wise balancing loss takes sequences of SeqLen=%d", s, s[1], c.SeqLen))
	}
	if !eval && c.SeqAuxLossCoeff > 0 && T%c.SeqLen != 0 {
		return wrap(fmt.Errorf("T=%d tokens are not a whole number of sequences of SeqLen=%d", T, c.SeqLen))
	}
	x2 := x
	if s.Dims() == 3 {
		if x2, err = G.Reshape(x, tensor.Shape{T, c.Hidden}); err != nil {
			return wrap(err)
		}
	}
	out, err := l.forward(x2, T, geo, eval)
	if err != nil {
		return wrap(err)
	}
	if s.Dims() == 3 {
		if out.Y, err = G.Reshape(out.Y, s.Clone()); err != nil {
			return wrap(err)
		}
	}
	return out, nil
}

// routerTopK is op.RouterTopK; for an expert-parallel layer its op aborts the communicator
// when it fails (a NaN score), so that the other ranks do not wait for this one in the plan's
// exchange.
func (l *Layer) routerTopK(logits *G.Node, K int, opts op.RouterOpts) (*G.Node, error) {
	ep, ok := l.paths.(epPaths)
	if !ok {
		return op.RouterTopK(logits, K, opts)
	}
	in := []*G.Node{logits}
	if opts.Bias != nil {
		in = append(in, opts.Bias)
	}
	return ep.guard(func(in ...*G.Node) (*G.Node, error) {
		o := opts
		if len(in) > 1 {
			o.Bias = in[1]
		}
		return op.RouterTopK(in[0], K, o)
	}, in...)
}

// RouterLogits returns the router logits x·router as a layer computes them without jitter: a
// bfloat16 x times a float32 router with op.MixedMatMul (on the device: bfloat16 tensor
// cores, float32 accuracy), any other x cast to the router's dtype and multiplied with
// op.MatMul.
func RouterLogits(x, router *G.Node) (*G.Node, error) {
	switch {
	case x == nil:
		return nil, fmt.Errorf("gomoe: moe: RouterLogits: x is nil")
	case router == nil:
		return nil, fmt.Errorf("gomoe: moe: RouterLogits: router is nil")
	}
	if x.Dtype() == bfloat16.Dtype && router.Dtype() == tensor.Float32 {
		return op.MixedMatMul(x, router, tensor.Float32)
	}
	xr, err := op.Cast(x, router.Dtype())
	if err != nil {
		return nil, err
	}
	return op.MatMul(xr, router)
}

// jitterSeed is the seed of the jitter noise of a layer's f-th Forward (op.JitterNoise adds the
// run number to it): Seed scrambled (SplitMix64's finaliser of Seed plus a constant), so that the
// noise is not math/rand's stream of Seed, from which New draws the weights (the first run's
// noise was > 1 exactly where the router weight was < 0), nor, run after run, the weight
// streams of layers seeded Seed+1, Seed+2, ...
func jitterSeed(seed, f int64) int64 {
	z := uint64(seed) + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return int64(z^z>>31) + 1_000_003*f
}

// jitteredLogits returns (x cast to RouterDtype, times the jitter noise)·Router.
func (l *Layer) jitteredLogits(x *G.Node) (*G.Node, error) {
	c := l.cfg
	xr, err := op.Cast(x, c.RouterDtype)
	if err != nil {
		return nil, err
	}
	noise, err := op.JitterNoise(xr, c.JitterEps, jitterSeed(c.Seed, l.forwards))
	if err != nil {
		return nil, err
	}
	if xr, err = G.HadamardProd(xr, noise); err != nil {
		return nil, err
	}
	return op.MatMul(xr, l.Router)
}

func (l *Layer) forward(x *G.Node, T int, geo kernels.Geometry, eval bool) (*Output, error) {
	c := l.cfg
	rdt, dt := c.RouterDtype, c.Dtype
	E, K := c.Experts, c.TopK
	o := &Output{}

	// Router (RouterLogits; with jitter, x is multiplied by the noise in the router's dtype).
	var err error
	if c.JitterEps > 0 && !eval {
		o.Logits, err = l.jitteredLogits(x)
	} else {
		o.Logits, err = RouterLogits(x, l.Router)
	}
	if err != nil {
		return nil, err
	}
	// The fused router: one launch for the scores and the selection, one for the probs (and
	// one for their backward), with the bits of the single-op chain (op.RouterTopK).
	ropts := op.RouterOpts{Score: kernels.RouterSoftmax, PreSoftmax: c.PreSoftmax, Groups: c.Groups,
		GroupsKept: c.GroupsKept, Bias: l.Bias, Scale: c.ScalingFactor}
	if c.Score == Sigmoid {
		ropts.Score = kernels.RouterSigmoid
	}
	if o.IDs, err = l.routerTopK(o.Logits, K, ropts); err != nil {
		return nil, err
	}
	if o.Probs, err = op.RouterProbs(o.Logits, o.IDs, ropts); err != nil {
		return nil, err
	}
	probs := o.Probs // the combine takes float32 probs for bfloat16 data
	if dt != bfloat16.Dtype {
		if probs, err = op.Cast(o.Probs, dt); err != nil {
			return nil, err
		}
	}

	// Dispatch, experts, combine.
	var planProbs *G.Node
	if geo.Mode == kernels.Capacity && c.DropPolicy == DropByProb {
		planProbs = o.Probs
	}
	route, err := l.expertPaths().route(o.IDs, planProbs, geo)
	if err != nil {
		return nil, err
	}
	o.Plan = route.plan()
	xp, err := route.dispatch(x)
	if err != nil {
		return nil, err
	}
	experts := route.expertPlan()
	h, err := l.activation(xp, func(a, w *G.Node) (*G.Node, error) { return op.GroupedMatMul(a, w, experts) }, l.W1)
	if err != nil {
		return nil, err
	}
	combineProbs := probs
	if c.ProbsOnActivation {
		pp, err := route.dispatchProbs(probs)
		if err != nil {
			return nil, err
		}
		if h, err = op.ScaleRows(h, pp); err != nil {
			return nil, err
		}
		combineProbs = nil
	}
	yp, err := op.GroupedMatMul(h, l.W2, experts)
	if err != nil {
		return nil, err
	}
	if o.Y, err = route.combine(yp, combineProbs); err != nil {
		return nil, err
	}
	if c.SharedFFN > 0 {
		hs, err := l.activation(x, op.MatMul, l.SharedW1)
		if err != nil {
			return nil, err
		}
		ys, err := op.MatMul(hs, l.SharedW2)
		if err != nil {
			return nil, err
		}
		if o.Y, err = G.Add(o.Y, ys); err != nil {
			return nil, err
		}
	}
	if o.Counts, err = G.Slice(o.Plan.Node, G.S(0, E)); err != nil {
		return nil, err
	}
	if E == 1 { // a one-element slice is a scalar in gorgonia; keep counts a vector [E]
		if o.Counts, err = G.Reshape(o.Counts, tensor.Shape{1}); err != nil {
			return nil, err
		}
	}
	// The int32 Counts node needs a consumer: gorgonia's lisp machine binds every node that
	// nothing consumes as a differentiable variable with a unit gradient, which exists only for
	// float and bool values ("Unhandled dtype: int32"), even in forward-only mode. A G.Read
	// would copy each run's counts into the previous run's value, which on the GPU is recycled
	// step memory by then; op.Sink keeps nothing.
	if _, err := op.Sink(o.Counts); err != nil {
		return nil, err
	}

	// Losses, in Dtype (the router's float32 for a bfloat16 layer).
	lossDt := dt
	if dt == bfloat16.Dtype {
		lossDt = rdt
	}
	var auxScores *G.Node // the scores of the balancing losses above MaxRouterBalanceExperts
	if c.AuxLossCoeff > 0 && !eval {
		if o.AuxLoss, err = l.balanceLoss(o, &auxScores, 1, c.AuxLossCoeff, lossDt); err != nil {
			return nil, err
		}
	}
	if c.SeqAuxLossCoeff > 0 && !eval {
		if o.SeqAuxLoss, err = l.balanceLoss(o, &auxScores, T/c.SeqLen, c.SeqAuxLossCoeff, lossDt); err != nil {
			return nil, err
		}
	}
	if c.ZLossCoeff > 0 && !eval {
		z, err := op.ZLoss(o.Logits, c.ZLossCoeff)
		if err != nil {
			return nil, err
		}
		if o.ZLoss, err = op.Cast(z, lossDt); err != nil {
			return nil, err
		}
	}
	var losses []*G.Node
	for _, n := range []*G.Node{o.AuxLoss, o.SeqAuxLoss, o.ZLoss} {
		if n != nil {
			losses = append(losses, n)
		}
	}
	if len(losses) > 0 {
		// AddScalars, not G.Add: gorgonia adds scalar nodes on the host only, and on the
		// device the losses are 0-d device tensors.
		if o.Loss, err = op.AddScalars(losses...); err != nil {
			return nil, err
		}
	} else {
		// A zero constant, so that G.Add(task, out.Loss) works whatever the coefficients.
		zero := any(float32(0))
		if lossDt == tensor.Float64 {
			zero = float64(0)
		}
		o.Loss = G.NewConstant(zero, G.In(l.g), G.WithName(l.name+".noloss"))
	}
	return o, nil
}

// activation computes the FFN hidden activation of a: silu(a·w1_gate) ⊙ (a·w1_up) for SwiGLU,
// from one matmul with the packed [H,2F] weight, gelu(a·w1) for GELU (op.SwiGLUPacked and
// op.GELU run on the CPU and on the device).
func (l *Layer) activation(a *G.Node, mm func(a, w *G.Node) (*G.Node, error), w1 *G.Node) (*G.Node, error) {
	z, err := mm(a, w1)
	if err != nil {
		return nil, err
	}
	if l.cfg.Activation == GELU {
		return op.GELU(z)
	}
	return op.SwiGLUPacked(z)
}

// balanceLoss is coeff · E/(B·K·S²) · Σ_b Σ_e N[b,e]·Σ_{t in b} s[t,e] for B sequences of S
// tokens (B = 1: the micro-batch loss), s the router's scores over all experts (Config.Score:
// the softmax of the logits, or their sigmoids normalised per row), in the logits' dtype, cast
// to dt. op.RouterBalanceLoss computes the scores inside the loss; above
// kernels.MaxRouterBalanceExperts experts (its device limit) the scores come from their own
// ops (op.Softmax, or op.Sigmoid and op.RowNormalize; made once, in *scores, for both losses)
// into op.BalanceLoss, with the same bits, except for a sigmoid row whose sigmoids sum below
// 2⁻⁶⁴ (every logit below about −44), which the fused loss takes as the row softmax and the
// single ops divide (NaN from logits of about −105 in float32; docs/errors.md).
func (l *Layer) balanceLoss(o *Output, scores **G.Node, B int, coeff float64, dt tensor.Dtype) (*G.Node, error) {
	c := l.cfg
	score := kernels.RouterSoftmax
	if c.Score == Sigmoid {
		score = kernels.RouterSigmoid
	}
	var v *G.Node
	var err error
	if c.Experts <= kernels.MaxRouterBalanceExperts {
		v, err = op.RouterBalanceLoss(o.IDs, o.Logits, c.Experts, c.TopK, B, coeff, score)
	} else {
		if *scores == nil {
			s := o.Logits
			if score == kernels.RouterSigmoid {
				if s, err = op.Sigmoid(s); err == nil {
					s, err = op.RowNormalize(s)
				}
			} else {
				s, err = op.Softmax(s)
			}
			*scores = s
		}
		if err == nil {
			v, err = op.BalanceLoss(o.IDs, *scores, c.Experts, c.TopK, B, coeff)
		}
	}
	if err != nil {
		return nil, err
	}
	return op.Cast(v, dt)
}

// Stats are a step's routing statistics, read from Output.Counts.
type Stats struct {
	// TokensPerExpert is the number of tokens each expert processed.
	TokensPerExpert []int
	// Dropped is the number of (token, expert) pairs dropped by the capacity limit.
	Dropped int
}

// Stats turns the value of Output.Counts (read with G.Read after a run) into Stats.
func (o *Output) Stats(counts G.Value) (Stats, error) {
	if o == nil || o.Plan == nil {
		return Stats{}, fmt.Errorf("gomoe: moe: Stats: the output has no plan (use the Output that Forward returned)")
	}
	geo := o.Plan.Geometry
	tk := float64(geo.T) * float64(geo.K) // a step routes at most T·K pairs
	load, err := countsOf(counts, geo.E, tk)
	if err != nil {
		return Stats{}, opkit.Wrap("moe: Stats", err)
	}
	st := Stats{TokensPerExpert: make([]int, geo.E), Dropped: geo.T * geo.K}
	for e, v := range load {
		st.TokensPerExpert[e] = int(v)
		st.Dropped -= int(v)
	}
	return st, nil
}

// stepBias adds step to b, each element in b's precision, unless an element would become
// ±Inf (many updates with a huge rate): then it changes nothing and returns that element and
// the value it would take; else -1.
func stepBias[F float32 | float64](b []F, step []float64) (int, float64) {
	for e, s := range step {
		if v := b[e] + F(s); math.IsInf(float64(v), 0) {
			return e, float64(v)
		}
	}
	for e, s := range step {
		b[e] += F(s)
	}
	return -1, 0
}

// maxLoad bounds the total load UpdateExpertBias accepts (summed over micro-batches): 2^53,
// where float64 still counts every token exactly.
const maxLoad = 1 << 53

// countsOf reads an [E] vector of counts (int32, int or float; a strided view at its elements)
// as float64, copying it from the GPU when it lives there. Every count must be a whole number >= 0, and their sum at most
// limit (so no count is huge either).
func countsOf(v G.Value, E int, limit float64) ([]float64, error) {
	if m := opkit.Missing(v); m != "" {
		return nil, fmt.Errorf("counts value is %s (read Output.Counts with G.Read after a run)", m)
	}
	if op.OnDevice(v) {
		h, err := op.HostCopy(v)
		if err != nil {
			return nil, err
		}
		v = h
	}
	if d, ok := v.(*tensor.Dense); ok && d.RequiresIterator() {
		// A strided view (a column of a matrix): Data would be its backing array.
		v = d.Materialize().(*tensor.Dense)
	}
	if s := v.Shape(); s.TotalSize() != E || (s.Dims() != 1 && !(E == 1 && s.IsScalar())) {
		return nil, fmt.Errorf("counts has shape %v, want (E=%d)", v.Shape(), E)
	}
	out := make([]float64, E)
	switch d := v.Data().(type) {
	case []int32:
		for i, x := range d[:E] {
			out[i] = float64(x)
		}
	case []int:
		for i, x := range d[:E] {
			out[i] = float64(x)
		}
	case []float32:
		for i, x := range d[:E] {
			out[i] = float64(x)
		}
	case []float64:
		copy(out, d[:E])
	case int32, int, float32, float64: // a one-expert scalar
		out[0], _ = scalarFloat(d)
	default:
		return nil, fmt.Errorf("counts has data %T, want int32, int or float", v.Data())
	}
	var sum float64
	for e, x := range out {
		if x < 0 || math.IsNaN(x) || math.IsInf(x, 0) || x != math.Trunc(x) {
			return nil, fmt.Errorf("counts[%d] = %g is not a valid count (a whole number >= 0)", e, x)
		}
		if sum += x; sum > limit {
			return nil, fmt.Errorf("counts[0..%d] sum to %g, more than the %g pairs they can count", e, sum, limit)
		}
	}
	return out, nil
}

// scalarFloat converts a numeric scalar to float64.
func scalarFloat(d any) (float64, bool) {
	switch x := d.(type) {
	case int32:
		return float64(x), true
	case int:
		return float64(x), true
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// UpdateExpertBias applies the aux-loss-free balancing step
//
//	bias[e] += BiasUpdateRate · sign(mean(load) − load[e])
//
// to the layer's expert bias, outside the gradient. load is the value of Output.Counts (or
// its sum over the micro-batches of a global batch), shape [E]. Call it once per optimiser
// step. It returns an error, and changes nothing, if the layer has no expert bias or load is
// not a valid [E] count vector.
func (l *Layer) UpdateExpertBias(load G.Value) error {
	if l == nil {
		return fmt.Errorf("gomoe: moe: UpdateExpertBias on a nil Layer")
	}
	if l.Bias == nil {
		return fmt.Errorf("gomoe: moe %s: UpdateExpertBias: the layer has no expert bias (Config.ExpertBias is off)", l.name)
	}
	E := l.cfg.Experts
	n, err := countsOf(load, E, maxLoad)
	if err != nil {
		return opkit.Wrap(fmt.Sprintf("moe %s: UpdateExpertBias", l.name), err)
	}
	var mean float64
	for _, x := range n {
		mean += x
	}
	mean /= float64(E)
	bv, ok := l.Bias.Value().(*tensor.Dense)
	if !ok {
		return fmt.Errorf("gomoe: moe %s: UpdateExpertBias: bias value is %T", l.name, l.Bias.Value())
	}
	if bv.RequiresIterator() || bv.Shape().TotalSize() != E {
		// A strided view's Data() is its backing array from the view's offset: the steps would
		// land on other elements, some outside the bias.
		return fmt.Errorf("gomoe: moe %s: UpdateExpertBias: the bias value is a non-contiguous view or not %d elements (shape %v): not updated", l.name, E, bv.Shape())
	}
	dev := op.OnDevice(bv) // a bias in GPU memory is updated on a host copy and written back
	target := bv
	if dev {
		if bv, err = op.HostCopy(target); err != nil {
			return opkit.Wrap(fmt.Sprintf("moe %s: UpdateExpertBias", l.name), err)
		}
	}
	rate := l.cfg.BiasUpdateRate
	sign := func(v float64) float64 {
		switch {
		case v > 0:
			return 1
		case v < 0:
			return -1
		}
		return 0
	}
	step := make([]float64, E)
	for e := range step {
		step[e] = rate * sign(mean-n[e])
	}
	bad, v := -1, 0.0
	switch b := bv.Data().(type) {
	case []float32:
		bad, v = stepBias(b, step)
	case []float64:
		bad, v = stepBias(b, step)
	default:
		return fmt.Errorf("gomoe: moe %s: UpdateExpertBias: bias data is %T", l.name, bv.Data())
	}
	if bad >= 0 {
		return fmt.Errorf("gomoe: moe %s: UpdateExpertBias: bias[%d] would become %v (BiasUpdateRate %g): not updated", l.name, bad, v, rate)
	}
	if dev {
		if err := op.WriteBack(target, bv); err != nil {
			return opkit.Wrap(fmt.Sprintf("moe %s: UpdateExpertBias", l.name), err)
		}
	}
	return nil
}
