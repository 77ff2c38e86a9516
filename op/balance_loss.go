package op

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// BalanceLoss is the load-balancing loss of a router: for ids [T,K] int32 (the chosen experts,
// -1 for none) and scores [T,E] (float32 or float64, the router's scores over all experts),
// with the T tokens split into seqs equal, contiguous sequences of S = T/seqs tokens,
//
//	loss = coeff · E/(seqs·K·S²) · Σ_b Σ_e N[b,e] · Σ_{t in b} scores[t,e]
//
// where N[b,e] is the number of pairs (t,k) of sequence b with ids[t,k] = e (as ExpertLoad
// counts them: -1 is not counted, other ids outside [0, E) are an error). seqs = 1 gives the
// micro-batch auxiliary loss, seqs = T/SeqLen the sequence-wise one. The result is a scalar
// node of the scores' dtype, computed in float64 and rounded once (see
// kernels.BalanceLossForward). It is differentiable with respect to the scores only (the
// counts are constants): dscores[t,e] = coeff·E/(seqs·K·S²) · N[b(t),e] · dloss.
//
// On device values (see the package doc) the loss is a device tensor of scalar shape, and the
// gradient takes the loss's output gradient as a host scalar (G.Grad's seed) or a device one.
func BalanceLoss(ids, scores *G.Node, experts, topK, seqs int, coeff float64) (*G.Node, error) {
	return newBalanceLoss(ids, scores, experts, topK, seqs, coeff, 0)
}

// RouterBalanceLoss is BalanceLoss of the router's scores over all experts, computed from the
// router's logits [T,E] inside the loss: score kernels.RouterSoftmax for
// BalanceLoss(ids, Softmax(logits), ...), kernels.RouterSigmoid for
// BalanceLoss(ids, RowNormalize(Sigmoid(logits)), ...). It gives those chains' bits (on the
// CPU and on the device alike; but a sigmoid row whose sigmoids sum below 2⁻⁶⁴, where the chain
// loses precision or divides 0 by 0, takes the row softmax, which equals σ/Σσ there) without the [T,E] scores, in two launches forward and three
// backward on the device instead of three and four (softmax) or four and five (sigmoid). Its
// gradient is with respect to the logits. On the device E is at most
// kernels.MaxRouterBalanceExperts.
//
// Two such losses on the same logits (the layer's micro-batch and sequence-wise losses) each
// take their own backward, and the logits' gradients are added; the chain with one shared
// softmax adds the scores' gradients before a single softmax backward, so the two agree to
// rounding, not bit for bit.
func RouterBalanceLoss(ids, logits *G.Node, experts, topK, seqs int, coeff float64, score kernels.RouterScore) (*G.Node, error) {
	if score != kernels.RouterSoftmax && score != kernels.RouterSigmoid {
		return nil, opkit.Errorf("RouterBalanceLoss", "unknown score function %d (want kernels.RouterSoftmax or kernels.RouterSigmoid)", int(score))
	}
	return newBalanceLoss(ids, logits, experts, topK, seqs, coeff, score)
}

// newBalanceLoss makes the loss op: x are the scores (score 0) or the logits.
func newBalanceLoss(ids, scores *G.Node, experts, topK, seqs int, coeff float64, score kernels.RouterScore) (*G.Node, error) {
	op := balanceLossOp{e: experts, k: topK, seqs: seqs, coeff: coeff, score: score}
	name, what := op.name(), op.input()
	if err := checkNodes(name, []*G.Node{ids, scores}, "ids", what); err != nil {
		return nil, err
	}
	idt, err := opkit.NodeDtype(name, "ids", ids)
	if err != nil {
		return nil, err
	}
	if err := checkInt32(name, "ids", idt); err != nil {
		return nil, err
	}
	sdt, err := opkit.NodeDtype(name, what, scores)
	if err != nil {
		return nil, err
	}
	if err := checkFloat(name, what, sdt); err != nil {
		return nil, err
	}
	if experts < 1 || topK < 1 {
		return nil, opkit.Errorf(name, "E=%d experts and K=%d, want both >= 1", experts, topK)
	}
	if math.IsNaN(coeff) || math.IsInf(coeff, 0) {
		return nil, opkit.Errorf(name, "coefficient %v is not finite", coeff)
	}
	if _, err := op.InferShape(ids.Shape(), scores.Shape()); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, op, ids, scores)
}

// balanceLossOp: ids [T,K] int32, scores [T,E] (score 0) or logits [T,E] → scalar.
type balanceLossOp struct {
	opkit.Base
	e, k, seqs int
	coeff      float64
	score      kernels.RouterScore // 0: the input is the scores; else the logits, scored so
}

// name is the op's name for errors.
func (op balanceLossOp) name() string {
	if op.score != 0 {
		return "RouterBalanceLoss"
	}
	return "BalanceLoss"
}

// input names the op's second input.
func (op balanceLossOp) input() string {
	if op.score != 0 {
		return "logits"
	}
	return "scores"
}

// scale is coeff·E/(B·K·S²) for T tokens.
func (op balanceLossOp) scale(T int) float64 {
	S := float64(T / op.seqs)
	return op.coeff * float64(op.e) / (float64(op.seqs) * float64(op.k) * S * S)
}

func (op balanceLossOp) Arity() int { return 2 }

// Type: Matrix int32 → Matrix a → a.
func (op balanceLossOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: a}, a)
}

// checkShapes checks ids (T, K) and scores (T, E) for this op.
func (op balanceLossOp) checkShapes(name string, is, ss tensor.Shape) error {
	if err := checkShape(name, "ids", is, dim{"T", -1}, dim{"K", op.k}); err != nil {
		return err
	}
	if err := checkShape(name, op.input(), ss, dim{"T", is[0]}, dim{"E", op.e}); err != nil {
		return err
	}
	if op.seqs < 1 || is[0]%op.seqs != 0 {
		return opkit.Errorf(name, "T=%d tokens do not split into %d equal sequences", is[0], op.seqs)
	}
	return nil
}

func (op balanceLossOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf(op.name(), ds, "ids", op.input())
	if err != nil {
		return nil, err
	}
	if err := op.checkShapes(op.name(), s[0], s[1]); err != nil {
		return nil, err
	}
	return tensor.ScalarShape(), nil
}

// args checks the values of a balancing-loss op (ids, scores-like) and returns their device
// backend (nil on the host).
func (op balanceLossOp) args(name string, vs []G.Value) (device.Backend, error) {
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if err := checkInt32(name, "ids", vs[0].Dtype()); err != nil {
		return nil, err
	}
	if err := checkFloat(name, op.input(), vs[1].Dtype()); err != nil {
		return nil, err
	}
	if err := op.checkShapes(name, vs[0].Shape(), vs[1].Shape()); err != nil {
		return nil, err
	}
	return onDevice(name, vs...)
}

func (op balanceLossOp) Do(vs ...G.Value) (G.Value, error) {
	name := op.name()
	dev, err := op.args(name, vs)
	if err != nil {
		return nil, err
	}
	T := vs[0].Shape()[0]
	if dev != nil {
		v, err := dev.BalanceLoss(vs[0], vs[1], op.e, op.k, op.seqs, op.scale(T), op.score)
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return v, nil
	}
	ids, err := hostIDs(name, vs[0])
	if err != nil {
		return nil, err
	}
	switch vs[1].Dtype() {
	case tensor.Float32:
		return balanceHost[float32](name, op, ids, vs[1], T)
	default:
		return balanceHost[float64](name, op, ids, vs[1], T)
	}
}

// hostIDs returns the data of a host int32 ids value.
func hostIDs(name string, v G.Value) ([]int32, error) {
	d, err := opkit.HostDense(name, "ids", v)
	if err != nil {
		return nil, err
	}
	return dataOf[int32](name, "ids", d)
}

func balanceHost[F float32 | float64](name string, op balanceLossOp, ids []int32, sv G.Value, T int) (G.Value, error) {
	s, err := hostFloats[F](name, op.input(), sv)
	if err != nil {
		return nil, err
	}
	var v F
	if op.score == 0 {
		v, err = kernels.BalanceLossForward(ids, s, T, op.k, op.e, op.seqs, op.scale(T))
	} else {
		v, err = kernels.RouterBalanceLossForward(ids, s, T, op.k, op.e, op.seqs, op.scale(T), op.score)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return lossScalar(v), nil
}

func (op balanceLossOp) String() string { return "op." + op.name() + op.params() }

// params are the op's parameters as String writes them.
func (op balanceLossOp) params() string {
	if op.score != 0 {
		return fmt.Sprintf("{score=%v E=%d K=%d seqs=%d coeff=%v}", op.score, op.e, op.k, op.seqs, op.coeff)
	}
	return fmt.Sprintf("{E=%d K=%d seqs=%d coeff=%v}", op.e, op.k, op.seqs, op.coeff)
}
func (op balanceLossOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op balanceLossOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// DiffWRT: the scores (or logits) only.
func (op balanceLossOp) DiffWRT(n int) []bool {
	w := make([]bool, n)
	if n == 2 {
		w[1] = true
	}
	return w
}

// SymDiff: dscores (or dlogits) = balanceLossGradOp(ids, scores or logits, dloss); ids get no
// gradient.
func (op balanceLossOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(op.name(), "want 2 inputs, got %d", len(inputs))
	}
	ds, err := opkit.ApplyOp(op.name()+"Grad", balanceLossGradOp{f: op}, inputs[0], inputs[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{nil, ds}, nil
}

// DoDiff accumulates the scores' gradient.
func (op balanceLossOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne(op.name()+".DoDiff", inputs, output, 2, 1, op.input(), func(gy G.Value) (G.Value, error) {
		return balanceLossGradOp{f: op}.Do(inputs[0].Value(), inputs[1].Value(), gy)
	})
}

// balanceLossGradOp: ids [T,K], scores [T,E] (for the shape and dtype only) or logits, dloss
// → [T,E]. It is not differentiable itself.
type balanceLossGradOp struct {
	opkit.Base
	f balanceLossOp
}

func (op balanceLossGradOp) Arity() int { return 3 }

// Type: Matrix int32 → Matrix a → a → Matrix a.
func (op balanceLossGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: a}, a, G.TensorType{Dims: 2, Of: a})
}

func (op balanceLossGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	name := op.f.name() + "Grad"
	s, err := shapesOf(name, ds, "ids", op.f.input(), "dloss")
	if err != nil {
		return nil, err
	}
	if err := op.f.checkShapes(name, s[0], s[1]); err != nil {
		return nil, err
	}
	return s[1].Clone(), nil
}

func (op balanceLossGradOp) Do(vs ...G.Value) (G.Value, error) {
	name := op.f.name() + "Grad"
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, err
	}
	dev, err := op.f.args(name, vs[:2])
	if err != nil {
		return nil, err
	}
	dt := vs[1].Dtype()
	dy, dyv, err := lossSeed(name, vs[2], dt, dev)
	if err != nil {
		return nil, err
	}
	T := vs[0].Shape()[0]
	f := op.f
	scale := f.scale(T)
	if dev != nil {
		v, err := dev.BalanceLossGrad(vs[0], vs[1], dt, f.e, f.k, f.seqs, scale, dy, dyv, f.score)
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return v, nil
	}
	ids, err := hostIDs(name, vs[0])
	if err != nil {
		return nil, err
	}
	var out *tensor.Dense
	if dt == tensor.Float32 {
		out, err = balanceGradHost[float32](name, f, ids, vs[1], T, scale, dyv)
	} else {
		out, err = balanceGradHost[float64](name, f, ids, vs[1], T, scale, dyv)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// balanceGradHost is the host gradient [T,E] of f: of the scores, or of the logits x.
func balanceGradHost[F float32 | float64](name string, f balanceLossOp, ids []int32, x G.Value, T int, scale, dy float64) (*tensor.Dense, error) {
	out, ds := newDense[F](T, f.e)
	if f.score == 0 {
		return out, kernels.BalanceLossBackward(ds, ids, T, f.k, f.e, f.seqs, scale, dy)
	}
	xs, err := hostFloats[F](name, "logits", x)
	if err != nil {
		return nil, err
	}
	return out, kernels.RouterBalanceLossBackward(ds, ids, xs, T, f.k, f.e, f.seqs, scale, dy, f.score)
}

func (op balanceLossGradOp) String() string        { return "op." + op.f.name() + "Grad" + op.f.params() }
func (op balanceLossGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op balanceLossGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = balanceLossOp{}
	_ G.ADOp = balanceLossOp{}
)
