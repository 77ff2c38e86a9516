package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// RouterOpts configure the fused router, RouterTopK and RouterProbs.
type RouterOpts struct {
	// Score is the score function: kernels.RouterSoftmax or kernels.RouterSigmoid.
	Score kernels.RouterScore
	// PreSoftmax, with the softmax score, selects on the softmax over all experts and gives
	// the chosen experts' softmax values as probs; false selects on the logits and takes the
	// softmax over the K chosen (post-softmax). Ignored for the sigmoid score, whose probs are
	// the chosen scores divided by their sum (for K > 1; a token whose chosen scores sum below
	// 2⁻⁶⁴ takes the softmax of its chosen logits, which equals that there: kernels.Router).
	PreSoftmax bool
	// Groups and GroupsKept are TopK's group-limited routing (0 or 1: no groups).
	Groups, GroupsKept int
	// Bias, if not nil, is a vector [E] added to the selection scores only (as in TopKOpts):
	// the aux-loss-free expert bias of DeepSeek-V3, which changes which experts RouterTopK
	// picks, never their weights. RouterProbs does not read it (nor check it): its probs are
	// those of the unbiased scores of the ids it is given, whether or not Bias is set, so one
	// RouterOpts serves both ops. No gradient reaches it (RouterTopK is not differentiable).
	Bias *G.Node
	// Scale multiplies the probs (the routed scaling factor; 0 means 1).
	Scale float64
}

// router returns the kernels' configuration of o.
func (o RouterOpts) router() kernels.Router {
	r := kernels.Router{Score: o.Score, Pre: o.PreSoftmax, Scale: o.Scale}
	r.Groups, r.Kept = kernels.TopKGroups(o.Groups, o.GroupsKept)
	if r.Scale == 0 {
		r.Scale = 1
	}
	return r
}

// RouterTopK selects, for every token (row) of logits [T,E], its k experts: the fused router's
// first op, one kernel launch for what Softmax or Sigmoid and TopK do (see kernels.Router for
// the math). It returns ids [T,K] int32 in descending order of selection score (ties to the
// lower id); they equal TopK's on the same scores. It is not differentiable; a NaN selection
// score makes the run fail with an error.
func RouterTopK(logits *G.Node, k int, o RouterOpts) (*G.Node, error) {
	const name = "RouterTopK"
	if logits == nil {
		return nil, opkit.Errorf(name, "logits is nil")
	}
	s := logits.Shape()
	if s.Dims() != 2 {
		return nil, opkit.Errorf(name, "logits have shape %v, want (T, E)", s)
	}
	if err := wantFloat(logits.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "logits: %v", err)
	}
	op := routerTopKOp{k: k, e: s[1], r: o.router(), bias: o.Bias != nil}
	if err := op.r.Check(op.e, k); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if o.Bias == nil {
		return opkit.ApplyOp(name, op, logits)
	}
	if err := checkSelectBias(name, o.Bias, logits, "logits"); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, op, logits, o.Bias)
}

// RouterProbs returns the combine weights probs [T,K] of the experts ids [T,K] int32 (from
// RouterTopK with the same options, whose Bias RouterProbs does not read: the bias moves the
// selection only) for logits [T,E]: the fused router's second op, one launch
// for what GatherTopK, Softmax or RowNormalize and Scale do, with the same bits (but for a
// sigmoid router's token whose chosen scores sum below 2⁻⁶⁴, where RowNormalize's division loses
// its precision or gives NaN and RouterProbs takes the softmax of the chosen logits, which
// σ_j/Σσ_k equals there: kernels.Router). It is differentiable with respect to the logits (one
// launch for the whole backward chain; the gradient is 0 at every expert a token did not
// choose, except with PreSoftmax, whose softmax runs over all experts).
//
// An id of -1 (a slot that names no expert; RouterTopK never gives one) has the chosen value 0
// before any normalisation, as GatherTopK gives it, on the host as on the device: its prob is 0
// for the pre-softmax and sigmoid routers, but a post-softmax router takes it as a logit 0 in
// the softmax over the K chosen: the slot's prob is not 0, and the token's other probs sum
// below Scale; a sigmoid router's token of only -1 slots (K > 1) gets NaN probs (0/0). No
// expert gets a gradient through a -1 slot itself. (Prob 0 for a post-softmax router's -1 slot
// would need another device kernel.) An id outside [-1, E) is a run error on the host; the
// device kernel takes it as -1 and reports it at the next status check (StatusBadID).
func RouterProbs(logits, ids *G.Node, o RouterOpts) (*G.Node, error) {
	const name = "RouterProbs"
	if err := checkNodes(name, []*G.Node{logits, ids}, "logits", "ids"); err != nil {
		return nil, err
	}
	if err := wantFloat(logits.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "logits: %v", err)
	}
	if ids.Dtype() != tensor.Int32 {
		return nil, opkit.Errorf(name, "ids have dtype %v, want int32", ids.Dtype())
	}
	s, is := logits.Shape(), ids.Shape()
	if s.Dims() != 2 || is.Dims() != 2 || s[0] != is[0] || s.TotalSize() == 0 || is.TotalSize() == 0 {
		return nil, opkit.Errorf(name, "logits %v and ids %v, want (T, E) and (T, K) with T, E, K >= 1", s, is)
	}
	op := routerProbsOp{e: s[1], k: is[1], r: o.router()}
	if err := op.r.Check(op.e, op.k); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return opkit.ApplyOp(name, op, logits, ids)
}

// routerTopKOp: logits [T,E] (, bias [E]) → ids [T,K] int32.
type routerTopKOp struct {
	opkit.Base
	opkit.NoGrad
	k, e int
	r    kernels.Router
	bias bool
}

func (op routerTopKOp) Arity() int {
	if op.bias {
		return 2
	}
	return 1
}

// Type: Matrix a (→ Vector a) → Matrix int32.
func (op routerTopKOp) Type() hm.Type { return topkOp{bias: op.bias}.Type() }

func (op routerTopKOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return topkOp{k: op.k, e: op.e, bias: op.bias}.InferShape(ds...)
}

func (op routerTopKOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RouterTopK"
	if err := opkit.CheckArity(name, vs, op.Arity()); err != nil { // a nil bias is not "no bias"
		return nil, err
	}
	if s := vs[0].Shape(); s.Dims() != 2 || s[1] != op.e {
		return nil, opkit.Errorf(name, "logits have shape %v, want (T, E=%d)", s, op.e)
	}
	var bias G.Value
	if op.bias {
		bias = vs[1]
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.RouterTopK(vs[0], bias, op.k, op.r)
		return v, opkit.Wrap(name, err)
	}
	switch vs[0].Dtype() {
	case tensor.Float32:
		return routerTopKHost[float32](name, op, vs[0], bias)
	case tensor.Float64:
		return routerTopKHost[float64](name, op, vs[0], bias)
	}
	return nil, opkit.Errorf(name, "logits have dtype %v, want float32 or float64", vs[0].Dtype())
}

func routerTopKHost[F float32 | float64](name string, op routerTopKOp, lv, bv G.Value) (G.Value, error) {
	x, err := hostFloats[F](name, "logits", lv)
	if err != nil {
		return nil, err
	}
	var b []F
	if bv != nil {
		if bv.Dtype() != lv.Dtype() || bv.Shape().TotalSize() != op.e {
			return nil, opkit.Errorf(name, "bias is %v %v, want %v (E=%d)", bv.Dtype(), bv.Shape(), lv.Dtype(), op.e)
		}
		if b, err = hostFloats[F](name, "bias", bv); err != nil {
			return nil, err
		}
	}
	T := lv.Shape()[0]
	out, ids := newDense[int32](T, op.k)
	if err := kernels.RouterTopK(ids, x, b, op.e, op.k, op.r); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op routerTopKOp) String() string {
	return fmt.Sprintf("op.RouterTopK{K=%d E=%d %v bias=%v}", op.k, op.e, op.r, op.bias)
}
func (op routerTopKOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op routerTopKOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// routerProbsOp: logits [T,E], ids [T,K] int32 → probs [T,K].
type routerProbsOp struct {
	opkit.Base
	e, k int
	r    kernels.Router
}

func (op routerProbsOp) Arity() int { return 2 }

// Type: Matrix a → Matrix int32 → Matrix a.
func (op routerProbsOp) Type() hm.Type { return matIndexType(2) }

func (op routerProbsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("RouterProbs", ds, "logits", "ids")
	if err != nil {
		return nil, err
	}
	if err := checkShape("RouterProbs", "logits", s[0], dim{"T", -1}, dim{"E", op.e}); err != nil {
		return nil, err
	}
	if err := checkShape("RouterProbs", "ids", s[1], dim{"T", s[0][0]}, dim{"K", op.k}); err != nil {
		return nil, err
	}
	return tensor.Shape{s[0][0], op.k}, nil
}

// args checks logits [T,E] and ids [T,K] values (and dprobs [T,K], if given).
func (op routerProbsOp) args(name string, vs []G.Value) error {
	s := vs[0].Shape()
	if s.Dims() != 2 || s[1] != op.e {
		return opkit.Errorf(name, "logits have shape %v, want (T, E=%d)", s, op.e)
	}
	if err := checkFloat(name, "logits", vs[0].Dtype()); err != nil {
		return err
	}
	if err := checkInt32(name, "ids", vs[1].Dtype()); err != nil {
		return err
	}
	if is := vs[1].Shape(); is.Dims() != 2 || is[0] != s[0] || is[1] != op.k {
		return opkit.Errorf(name, "ids have shape %v, want (T=%d, K=%d)", is, s[0], op.k)
	}
	if len(vs) > 2 {
		if vs[2].Dtype() != vs[0].Dtype() || !vs[2].Shape().Eq(vs[1].Shape()) {
			return opkit.Errorf(name, "dprobs are %v %v, want %v (T=%d, K=%d)", vs[2].Dtype(), vs[2].Shape(), vs[0].Dtype(), s[0], op.k)
		}
	}
	return nil
}

func (op routerProbsOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RouterProbs"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if err := op.args(name, vs); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.RouterProbs(vs[0], vs[1], op.r)
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		return routerProbsHost[float32](name, op, vs, false)
	}
	return routerProbsHost[float64](name, op, vs, false)
}

// routerProbsHost runs the CPU kernel: the probs, or (grad) dlogits from vs[2] = dprobs.
func routerProbsHost[F float32 | float64](name string, op routerProbsOp, vs []G.Value, grad bool) (G.Value, error) {
	x, err := hostFloats[F](name, "logits", vs[0])
	if err != nil {
		return nil, err
	}
	id, err := gmmDense(name, "ids", vs[1], tensor.Int32, nil)
	if err != nil {
		return nil, err
	}
	ids := id.Int32s()
	T := vs[0].Shape()[0]
	if !grad {
		out, p := newDense[F](T, op.k)
		if err := kernels.RouterProbs(p, x, ids, op.e, op.k, op.r); err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return out, nil
	}
	dp, err := hostFloats[F](name, "dprobs", vs[2])
	if err != nil {
		return nil, err
	}
	out, dx := newDense[F](T, op.e)
	if err := kernels.RouterProbsBackward(dx, x, ids, dp, op.e, op.k, op.r); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op routerProbsOp) String() string {
	return fmt.Sprintf("op.RouterProbs{E=%d K=%d %v}", op.e, op.k, op.r)
}
func (op routerProbsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op routerProbsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// DiffWRT: the logits are differentiable, the ids are not.
func (op routerProbsOp) DiffWRT(int) []bool { return []bool{true, false} }

// SymDiff: dlogits = routerProbsGradOp(logits, ids, dprobs).
func (op routerProbsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("RouterProbs", "want 2 inputs, got %d", len(inputs))
	}
	d, err := G.ApplyOp(routerProbsGradOp{p: op}, inputs[0], inputs[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff accumulates dlogits into the logits' gradient.
func (op routerProbsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("RouterProbs.DoDiff", inputs, output, 2, 0, "logits", func(dy G.Value) (G.Value, error) {
		return routerProbsGradOp{p: op}.Do(inputs[0].Value(), inputs[1].Value(), dy)
	})
}

// routerProbsGradOp: logits [T,E], ids [T,K] int32, dprobs [T,K] → dlogits [T,E].
type routerProbsGradOp struct {
	opkit.Base
	p routerProbsOp
}

func (op routerProbsGradOp) Arity() int { return 3 }

// Type: Matrix a → Matrix int32 → Matrix a → Matrix a.
func (op routerProbsGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	m := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(m, G.TensorType{Dims: 2, Of: tensor.Int32}, m, m)
}

func (op routerProbsGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 3 {
		return nil, opkit.Errorf("RouterProbsGrad", "want 3 inputs, got %d", len(ds))
	}
	if _, err := op.p.InferShape(ds[0], ds[1]); err != nil {
		return nil, err
	}
	if _, err := op.p.InferShape(ds[0], ds[2]); err != nil { // dprobs has the ids' shape
		return nil, err
	}
	return ds[0].(tensor.Shape).Clone(), nil
}

func (op routerProbsGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RouterProbsGrad"
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, err
	}
	if err := op.p.args(name, vs); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.RouterProbsGrad(vs[0], vs[1], vs[2], op.p.r)
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		return routerProbsHost[float32](name, op.p, vs, true)
	}
	return routerProbsHost[float64](name, op.p, vs, true)
}

func (op routerProbsGradOp) String() string {
	return fmt.Sprintf("op.RouterProbsGrad{E=%d K=%d %v}", op.p.e, op.p.k, op.p.r)
}
func (op routerProbsGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op routerProbsGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = routerTopKOp{}
	_ G.ADOp = routerTopKOp{}
	_ G.SDOp = routerProbsOp{}
	_ G.ADOp = routerProbsOp{}
)
