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
	const name = "BalanceLoss"
	if err := checkNodes(name, []*G.Node{ids, scores}, "ids", "scores"); err != nil {
		return nil, err
	}
	idt, err := opkit.NodeDtype(name, "ids", ids)
	if err != nil {
		return nil, err
	}
	if err := checkInt32(name, "ids", idt); err != nil {
		return nil, err
	}
	sdt, err := opkit.NodeDtype(name, "scores", scores)
	if err != nil {
		return nil, err
	}
	if err := checkFloat(name, "scores", sdt); err != nil {
		return nil, err
	}
	if experts < 1 || topK < 1 {
		return nil, opkit.Errorf(name, "E=%d experts and K=%d, want both >= 1", experts, topK)
	}
	if math.IsNaN(coeff) || math.IsInf(coeff, 0) {
		return nil, opkit.Errorf(name, "coefficient %v is not finite", coeff)
	}
	op := balanceLossOp{e: experts, k: topK, seqs: seqs, coeff: coeff}
	if _, err := op.InferShape(ids.Shape(), scores.Shape()); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, op, ids, scores)
}

// balanceLossOp: ids [T,K] int32, scores [T,E] → scalar.
type balanceLossOp struct {
	opkit.Base
	e, k, seqs int
	coeff      float64
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
	if err := checkShape(name, "scores", ss, dim{"T", is[0]}, dim{"E", op.e}); err != nil {
		return err
	}
	if op.seqs < 1 || is[0]%op.seqs != 0 {
		return opkit.Errorf(name, "T=%d tokens do not split into %d equal sequences", is[0], op.seqs)
	}
	return nil
}

func (op balanceLossOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("BalanceLoss", ds, "ids", "scores")
	if err != nil {
		return nil, err
	}
	if err := op.checkShapes("BalanceLoss", s[0], s[1]); err != nil {
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
	if err := checkFloat(name, "scores", vs[1].Dtype()); err != nil {
		return nil, err
	}
	if err := op.checkShapes(name, vs[0].Shape(), vs[1].Shape()); err != nil {
		return nil, err
	}
	return onDevice(name, vs...)
}

func (op balanceLossOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "BalanceLoss"
	dev, err := op.args(name, vs)
	if err != nil {
		return nil, err
	}
	T := vs[0].Shape()[0]
	if dev != nil {
		v, err := dev.BalanceLoss(vs[0], vs[1], op.e, op.k, op.seqs, op.scale(T))
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
	s, err := hostFloats[F](name, "scores", sv)
	if err != nil {
		return nil, err
	}
	v, err := kernels.BalanceLossForward(ids, s, T, op.k, op.e, op.seqs, op.scale(T))
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return lossScalar(v), nil
}

func (op balanceLossOp) String() string {
	return fmt.Sprintf("op.BalanceLoss{E=%d K=%d seqs=%d coeff=%v}", op.e, op.k, op.seqs, op.coeff)
}
func (op balanceLossOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op balanceLossOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// DiffWRT: the scores only.
func (op balanceLossOp) DiffWRT(n int) []bool {
	w := make([]bool, n)
	if n == 2 {
		w[1] = true
	}
	return w
}

// SymDiff: dscores = balanceLossGradOp(ids, scores, dloss); ids get no gradient.
func (op balanceLossOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("BalanceLoss", "want 2 inputs, got %d", len(inputs))
	}
	ds, err := opkit.ApplyOp("BalanceLossGrad", balanceLossGradOp{f: op}, inputs[0], inputs[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{nil, ds}, nil
}

// DoDiff accumulates the scores' gradient.
func (op balanceLossOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("BalanceLoss.DoDiff", inputs, output, 2, 1, "scores", func(gy G.Value) (G.Value, error) {
		return balanceLossGradOp{f: op}.Do(inputs[0].Value(), inputs[1].Value(), gy)
	})
}

// balanceLossGradOp: ids [T,K], scores [T,E] (for the shape and dtype only), dloss → [T,E].
// It is not differentiable itself.
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
	s, err := shapesOf("BalanceLossGrad", ds, "ids", "scores", "dloss")
	if err != nil {
		return nil, err
	}
	if err := op.f.checkShapes("BalanceLossGrad", s[0], s[1]); err != nil {
		return nil, err
	}
	return s[1].Clone(), nil
}

func (op balanceLossGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "BalanceLossGrad"
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, err
	}
	dev, err := op.f.args(name, vs[:2])
	if err != nil {
		return nil, err
	}
	dt := vs[1].Dtype()
	dy, dyv, err := lossSeed(name, vs[2], dt, dev != nil)
	if err != nil {
		return nil, err
	}
	T := vs[0].Shape()[0]
	f := op.f
	scale := f.scale(T)
	if dev != nil {
		v, err := dev.BalanceLossGrad(vs[0], dt, f.e, f.k, f.seqs, scale, dy, dyv)
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
		var ds []float32
		out, ds = newDense[float32](T, f.e)
		err = kernels.BalanceLossBackward(ds, ids, T, f.k, f.e, f.seqs, scale, dyv)
	} else {
		var ds []float64
		out, ds = newDense[float64](T, f.e)
		err = kernels.BalanceLossBackward(ds, ids, T, f.k, f.e, f.seqs, scale, dyv)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op balanceLossGradOp) String() string {
	return fmt.Sprintf("op.BalanceLossGrad{E=%d K=%d seqs=%d coeff=%v}", op.f.e, op.f.k, op.f.seqs, op.f.coeff)
}
func (op balanceLossGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op balanceLossGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = balanceLossOp{}
	_ G.ADOp = balanceLossOp{}
)
