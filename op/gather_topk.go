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

// GatherTopK picks the chosen experts' scores: out[t,k] = scores[t, ids[t,k]] for scores
// [T,E] and ids [T,K] int32 (an id of -1 gives 0). It is differentiable with respect to the
// scores: the backward scatters the output gradient into a [T,E] gradient that is 0 at every
// expert a token did not choose.
func GatherTopK(scores, ids *G.Node) (*G.Node, error) {
	const name = "GatherTopK"
	if scores == nil || ids == nil {
		return nil, fmt.Errorf("gomoe: %s: nil input node", name)
	}
	if err := wantFloat(scores.Dtype()); err != nil {
		return nil, fmt.Errorf("gomoe: %s: scores: %v", name, err)
	}
	if ids.Dtype() != tensor.Int32 {
		return nil, fmt.Errorf("gomoe: %s: ids has dtype %v, want int32", name, ids.Dtype())
	}
	s, is := scores.Shape(), ids.Shape()
	if s.Dims() != 2 || is.Dims() != 2 || s[0] != is[0] {
		return nil, fmt.Errorf("gomoe: %s: scores %v and ids %v, want (T, E) and (T, K)", name, s, is)
	}
	if s.TotalSize() == 0 || is.TotalSize() == 0 {
		return nil, fmt.Errorf("gomoe: %s: scores %v and ids %v, want T, E and K >= 1 (Gorgonia cannot allocate the gradient of an empty tensor)", name, s, is)
	}
	if err := checkNodes("GatherTopK", []*G.Node{scores, ids}, "scores", "ids"); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, gatherTopKOp{e: s[1]}, scores, ids)
}

// gatherTopKOp: scores [T,E], ids [T,K] int32 → [T,K].
type gatherTopKOp struct {
	opkit.Base
	e int
}

func (op gatherTopKOp) Arity() int { return 2 }

// Type: Matrix a → Matrix int32 → Matrix a.
func (op gatherTopKOp) Type() hm.Type { return matIndexType(2) }

func (op gatherTopKOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 2 {
		return nil, fmt.Errorf("gomoe: GatherTopK: want 2 inputs, got %d", len(ds))
	}
	s, ok1 := ds[0].(tensor.Shape)
	is, ok2 := ds[1].(tensor.Shape)
	if !ok1 || !ok2 || s.Dims() != 2 || is.Dims() != 2 || s[0] != is[0] || s[1] != op.e {
		return nil, fmt.Errorf("gomoe: GatherTopK: scores %v and ids %v, want (T, E=%d) and (T, K)", ds[0], ds[1], op.e)
	}
	return tensor.Shape{is[0], is[1]}, nil
}

// gatherTopKArgs validates (scores-like [T,E], ids [T,K]) values.
func gatherTopKArgs(name string, e int, sv, iv G.Value) (s *tensor.Dense, ids []int32, T, K int, err error) {
	if s, err = gmmDense(name, "scores", sv, tensor.Dtype{}, nil); err != nil {
		return
	}
	if err = checkFloat(name, "scores", s.Dtype()); err != nil {
		return
	}
	if s.Dims() != 2 || s.Shape()[1] != e {
		err = fmt.Errorf("gomoe: %s: scores have shape %v, want (T, E=%d)", name, s.Shape(), e)
		return
	}
	T = s.Shape()[0]
	id, err := gmmDense(name, "ids", iv, tensor.Int32, nil)
	if err != nil {
		return
	}
	if id.Dims() != 2 || id.Shape()[0] != T {
		err = fmt.Errorf("gomoe: %s: ids have shape %v, want (T=%d, K)", name, id.Shape(), T)
		return
	}
	K = id.Shape()[1]
	ids = id.Int32s()
	for i, x := range ids {
		if x < -1 || int(x) >= e {
			err = fmt.Errorf("gomoe: %s: ids[%d,%d] = %d is out of range [-1, %d)", name, i/K, i%K, x, e)
			return
		}
	}
	return
}

func (op gatherTopKOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "GatherTopK"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		if s := vs[0].Shape(); s.Dims() != 2 || s[1] != op.e {
			return nil, fmt.Errorf("gomoe: %s: scores have shape %v, want (T, E=%d)", name, s, op.e)
		}
		v, err := dev.GatherTopK(vs[0], vs[1])
		return v, opkit.Wrap(name, err)
	}
	s, ids, T, K, err := gatherTopKArgs(name, op.e, vs[0], vs[1])
	if err != nil {
		return nil, err
	}
	out := tensor.New(tensor.Of(s.Dtype()), tensor.WithShape(T, K))
	switch s.Dtype() {
	case tensor.Float32:
		err = kernels.GatherTopK(out.Float32s(), s.Float32s(), ids, op.e, K)
	default:
		err = kernels.GatherTopK(out.Float64s(), s.Float64s(), ids, op.e, K)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (op gatherTopKOp) String() string        { return fmt.Sprintf("op.GatherTopK{E=%d}", op.e) }
func (op gatherTopKOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op gatherTopKOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// DiffWRT: the scores are differentiable, the ids are not.
func (op gatherTopKOp) DiffWRT(int) []bool { return []bool{true, false} }

// SymDiff scatters the output gradient into a [T,E] gradient of the scores.
func (op gatherTopKOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, fmt.Errorf("gomoe: GatherTopK: want 2 inputs, got %d", len(inputs))
	}
	ds, err := G.ApplyOp(gatherTopKGradOp{e: op.e}, grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{ds, nil}, nil
}

// DoDiff accumulates the scattered output gradient into the scores' gradient.
func (op gatherTopKOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "GatherTopK.DoDiff"
	if len(inputs) != 2 {
		return fmt.Errorf("gomoe: %s: want 2 inputs, got %d", name, len(inputs))
	}
	gsv, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gov, err := output.Grad()
	if err != nil {
		return err
	}
	gs, ok := gsv.(*tensor.Dense)
	if !ok || gs.RequiresIterator() {
		return fmt.Errorf("gomoe: %s: scores gradient is %T, want a contiguous dense tensor", name, gsv)
	}
	_, ids, T, K, err := gatherTopKArgs(name, op.e, gs, inputs[1].Value())
	if err != nil {
		return err
	}
	g, err := gmmDense(name, "output grad", gov, gs.Dtype(), tensor.Shape{T, K})
	if err != nil {
		return err
	}
	return gatherTopKBackward(gs, g, ids, op.e, K)
}

// gatherTopKBackward adds g [T,K] into the chosen experts' columns of dst [T,E] (dst and g of
// one float dtype).
func gatherTopKBackward(dst, g *tensor.Dense, ids []int32, e, k int) error {
	if dst.Dtype() == tensor.Float32 {
		return kernels.GatherTopKBackward(dst.Float32s(), g.Float32s(), ids, e, k)
	}
	return kernels.GatherTopKBackward(dst.Float64s(), g.Float64s(), ids, e, k)
}

// gatherTopKGradOp: grad [T,K], ids [T,K] int32 → [T,E], the scatter of grad into the chosen
// experts' columns (0 elsewhere).
type gatherTopKGradOp struct {
	opkit.Base
	e int
}

func (op gatherTopKGradOp) Arity() int { return 2 }

// Type: Matrix a → Matrix int32 → Matrix a.
func (op gatherTopKGradOp) Type() hm.Type { return matIndexType(2) }

func (op gatherTopKGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 2 {
		return nil, fmt.Errorf("gomoe: GatherTopKGrad: want 2 inputs, got %d", len(ds))
	}
	g, ok1 := ds[0].(tensor.Shape)
	is, ok2 := ds[1].(tensor.Shape)
	if !ok1 || !ok2 || !g.Eq(is) || g.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: GatherTopKGrad: grad %v and ids %v, want both (T, K)", ds[0], ds[1])
	}
	return tensor.Shape{g[0], op.e}, nil
}

func (op gatherTopKGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "GatherTopKGrad"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.GatherTopKGrad(vs[0], vs[1], op.e)
		return v, opkit.Wrap(name, err)
	}
	g, err := gmmDense(name, "grad", vs[0], tensor.Dtype{}, nil)
	if err != nil {
		return nil, err
	}
	if err := checkFloat(name, "grad", g.Dtype()); err != nil {
		return nil, err
	}
	if g.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: %s: grad has shape %v, want (T, K)", name, g.Shape())
	}
	T, K := g.Shape()[0], g.Shape()[1]
	out := tensor.New(tensor.Of(g.Dtype()), tensor.WithShape(T, op.e))
	_, ids, _, _, err := gatherTopKArgs(name, op.e, out, vs[1])
	if err != nil {
		return nil, err
	}
	if len(ids) != T*K {
		return nil, fmt.Errorf("gomoe: %s: ids have %d entries, want %d", name, len(ids), T*K)
	}
	if err := gatherTopKBackward(out, g, ids, op.e, K); err != nil {
		return nil, err
	}
	return out, nil
}

func (op gatherTopKGradOp) String() string        { return fmt.Sprintf("op.GatherTopKGrad{E=%d}", op.e) }
func (op gatherTopKGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op gatherTopKGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = gatherTopKOp{}
	_ G.ADOp = gatherTopKOp{}
)
