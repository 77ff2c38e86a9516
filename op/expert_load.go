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

// ExpertLoad counts the tokens routed to each expert: ids [T,K] int32 → load [B,E] of dtype
// dt, where load[b,e] is the number of pairs (t,k) of sequence b with ids[t,k] = e. The T
// tokens are split into B equal, contiguous sequences (B = 1: one count per expert for the
// whole micro-batch). Ids of -1 are not counted. T = 0 gives zero counts; K = 0 (no slots) is
// a build error. The counts are constants to the gradient (the load-balancing losses do not
// differentiate them), so the op is not differentiable.
func ExpertLoad(ids *G.Node, experts, seqs int, dt tensor.Dtype) (*G.Node, error) {
	const name = "ExpertLoad"
	if ids == nil {
		return nil, fmt.Errorf("gomoe: %s: ids is nil", name)
	}
	if ids.Dtype() != tensor.Int32 {
		return nil, fmt.Errorf("gomoe: %s: ids has dtype %v, want int32", name, ids.Dtype())
	}
	if err := wantFloat(dt); err != nil {
		return nil, fmt.Errorf("gomoe: %s: %v", name, err)
	}
	s := ids.Shape()
	if s.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: %s: ids has shape %v, want (T, K)", name, s)
	}
	if s[1] < 1 { // no slot routes nothing: NewPlan and TopK refuse K = 0 too
		return nil, fmt.Errorf("gomoe: %s: ids have shape %v: K=%d slots per token, want K >= 1", name, s, s[1])
	}
	if experts < 1 {
		return nil, fmt.Errorf("gomoe: %s: E=%d experts, want >= 1", name, experts)
	}
	if seqs < 1 || s[0]%seqs != 0 {
		return nil, fmt.Errorf("gomoe: %s: T=%d tokens do not split into %d equal sequences", name, s[0], seqs)
	}
	return opkit.ApplyOp(name, expertLoadOp{e: experts, seqs: seqs, dt: dt}, ids)
}

type expertLoadOp struct {
	opkit.Base
	opkit.NoGrad
	e, seqs int
	dt      tensor.Dtype
}

func (op expertLoadOp) Arity() int { return 1 }

// Type: Matrix int32 → Matrix dt.
func (op expertLoadOp) Type() hm.Type {
	return hm.NewFnType(G.TensorType{Dims: 2, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: op.dt})
}

func (op expertLoadOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 1 {
		return nil, fmt.Errorf("gomoe: ExpertLoad: want 1 input, got %d", len(ds))
	}
	s, ok := ds[0].(tensor.Shape)
	if !ok || s.Dims() != 2 || s[0]%op.seqs != 0 {
		return nil, fmt.Errorf("gomoe: ExpertLoad: ids have shape %v, want (T, K) with T a multiple of %d", ds[0], op.seqs)
	}
	return tensor.Shape{op.seqs, op.e}, nil
}

func (op expertLoadOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "ExpertLoad"
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	d, err := gmmDense(name, "ids", vs[0], tensor.Int32, nil)
	if err != nil {
		return nil, err
	}
	if d.Dims() != 2 || d.Shape()[0]%op.seqs != 0 {
		return nil, fmt.Errorf("gomoe: %s: ids have shape %v, want (T, K) with T a multiple of %d", name, d.Shape(), op.seqs)
	}
	K := d.Shape()[1]
	if err := opkit.CheckAlloc(name, int(op.dt.Size()), op.seqs, op.e); err != nil { // E is not bounded by the ids
		return nil, err
	}
	out := tensor.New(tensor.Of(op.dt), tensor.WithShape(op.seqs, op.e))
	switch op.dt {
	case tensor.Float32:
		err = kernels.ExpertLoad(out.Float32s(), d.Int32s(), K, op.e, op.seqs)
	default:
		err = kernels.ExpertLoad(out.Float64s(), d.Int32s(), K, op.e, op.seqs)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (op expertLoadOp) String() string {
	return fmt.Sprintf("op.ExpertLoad{E=%d seqs=%d dtype=%v}", op.e, op.seqs, op.dt)
}
func (op expertLoadOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op expertLoadOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = expertLoadOp{}
	_ G.ADOp = expertLoadOp{}
)
