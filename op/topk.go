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

// TopKOpts are the options of TopK.
type TopKOpts struct {
	// Groups splits the E experts into this many equal groups (0 or 1: no groups). A token
	// first keeps the GroupsKept groups with the highest group score (the sum of the group's
	// top max(1, K/GroupsKept) selection scores), then picks its K experts among the experts
	// of the kept groups (group-limited routing, DeepSeek-V2/V3).
	Groups int
	// GroupsKept is the number of groups each token may use (1 <= GroupsKept <= Groups).
	GroupsKept int
	// Bias, if not nil, is a vector [E] added to the scores for the selection only (the
	// aux-loss-free expert bias of DeepSeek-V3). It does not change the returned ids' weights:
	// gather the unbiased scores with GatherTopK.
	Bias *G.Node
}

// TopK selects, for every token (row) of scores [T,E], the K experts with the highest score
// (plus the bias, if any) and returns their ids [T,K] int32, in descending order of selection
// score; equal scores go to the lower expert id. TopK is not differentiable: gradients reach
// the scores through GatherTopK. A NaN score makes the run fail with an error.
func TopK(scores *G.Node, k int, opts TopKOpts) (*G.Node, error) {
	const name = "TopK"
	if scores == nil {
		return nil, fmt.Errorf("gomoe: %s: scores is nil", name)
	}
	s := scores.Shape()
	if s.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: %s: scores has shape %v, want (T, E)", name, s)
	}
	if err := wantFloat(scores.Dtype()); err != nil {
		return nil, fmt.Errorf("gomoe: %s: scores: %v", name, err)
	}
	op := topkOp{k: k, e: s[1], bias: opts.Bias != nil}
	op.groups, op.kept = kernels.TopKGroups(opts.Groups, opts.GroupsKept)
	if err := op.validate(); err != nil {
		return nil, err
	}
	if opts.Bias == nil {
		return opkit.ApplyOp(name, op, scores)
	}
	if err := checkSelectBias(name, opts.Bias, scores, "scores"); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, op, scores, opts.Bias)
}

// checkSelectBias checks the selection bias of a top-k op: a node of x's graph and dtype with
// shape [E], x being the [T,E] input called what.
func checkSelectBias(name string, bias, x *G.Node, what string) error {
	if err := checkNodes(name, []*G.Node{x, bias}, what, "bias"); err != nil {
		return err
	}
	E := x.Shape()[1]
	if bs := bias.Shape(); bs.Dims() != 1 || bs[0] != E {
		return opkit.Errorf(name, "bias has shape %v, want (E=%d)", bs, E)
	}
	if bias.Dtype() != x.Dtype() {
		return opkit.Errorf(name, "bias is %v but %s are %v", bias.Dtype(), what, x.Dtype())
	}
	return nil
}

// topkOp: scores [T,E] (, bias [E]) → ids [T,K] int32.
type topkOp struct {
	opkit.Base
	opkit.NoGrad
	k, e         int
	groups, kept int
	bias         bool
}

func (op topkOp) validate() error { return kernels.CheckTopK(op.e, op.k, op.groups, op.kept) }

func (op topkOp) Arity() int {
	if op.bias {
		return 2
	}
	return 1
}

// Type: Matrix a (→ Vector a) → Matrix int32.
func (op topkOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	out := G.TensorType{Dims: 2, Of: tensor.Int32}
	if op.bias {
		return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a}, out)
	}
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, out)
}

func (op topkOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != op.Arity() {
		return nil, fmt.Errorf("gomoe: TopK: want %d inputs, got %d", op.Arity(), len(ds))
	}
	s, ok := ds[0].(tensor.Shape)
	if !ok || s.Dims() != 2 || s[1] != op.e {
		return nil, fmt.Errorf("gomoe: TopK: scores have shape %v, want (T, E=%d)", ds[0], op.e)
	}
	if op.bias {
		b, ok := ds[1].(tensor.Shape)
		if !ok || b.TotalSize() != op.e || b.Dims() != 1 {
			return nil, fmt.Errorf("gomoe: TopK: bias has shape %v, want (E=%d)", ds[1], op.e)
		}
	}
	return tensor.Shape{s[0], op.k}, nil
}

func (op topkOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "TopK"
	if err := opkit.CheckArity(name, vs, op.Arity()); err != nil {
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
		var bias G.Value
		if op.bias {
			bias = vs[1]
		}
		v, err := dev.TopK(vs[0], bias, op.k, op.groups, op.kept)
		return v, opkit.Wrap(name, err)
	}
	sd, err := gmmDense(name, "scores", vs[0], tensor.Dtype{}, nil)
	if err != nil {
		return nil, err
	}
	if sd.Dims() != 2 || sd.Shape()[1] != op.e {
		return nil, fmt.Errorf("gomoe: %s: scores have shape %v, want (T, E=%d)", name, sd.Shape(), op.e)
	}
	T := sd.Shape()[0]
	scores, err := topkFloats(name, sd)
	if err != nil {
		return nil, err
	}
	var bias []float64
	if op.bias {
		bd, err := gmmDense(name, "bias", vs[1], sd.Dtype(), tensor.Shape{op.e})
		if err != nil {
			return nil, err
		}
		if bias, err = topkFloats(name, bd); err != nil {
			return nil, err
		}
	}
	ids := make([]int32, T*op.k)
	if err := kernels.TopK(ids, scores, bias, op.e, op.k, op.groups, op.kept); err != nil {
		return nil, err
	}
	return tensor.New(tensor.WithShape(T, op.k), tensor.WithBacking(ids)), nil
}

// topkFloats converts a float32/float64 tensor's data to float64 (exact).
func topkFloats(name string, d *tensor.Dense) ([]float64, error) {
	switch d.Dtype() {
	case tensor.Float32:
		src := d.Float32s()
		out := make([]float64, len(src))
		for i, v := range src {
			out[i] = float64(v)
		}
		return out, nil
	case tensor.Float64:
		return d.Float64s(), nil
	}
	return nil, fmt.Errorf("gomoe: %s: dtype %v, want float32 or float64", name, d.Dtype())
}

func (op topkOp) String() string {
	return fmt.Sprintf("op.TopK{K=%d E=%d groups=%d kept=%d bias=%v}", op.k, op.e, op.groups, op.kept, op.bias)
}
func (op topkOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op topkOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = topkOp{}
	_ G.ADOp = topkOp{}
)
