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

// Plan is a routing plan node (int32 vector, layout kernels.Geometry.View) plus its static
// geometry. Build it with NewPlan and pass it to Permute, PermuteProbs and Unpermute; the
// geometry fixes every shape, so the node's value changes from batch to batch while the graph
// stays the same.
type Plan struct {
	// Node is the flat int32 plan vector of length Geometry.PlanLen().
	Node *G.Node
	// Geometry is the plan's static geometry, with T and K taken from the ids.
	Geometry kernels.Geometry
}

// Rows is R, the number of rows of the permuted buffer.
func (p *Plan) Rows() int {
	if p == nil {
		return 0
	}
	return p.Geometry.Rows()
}

// NewPlan builds the plan from ids [T,K] int32 (and probs [T,K], required for capacity mode
// with kernels.DropByProb, else may be nil).
// T and K are taken from ids' shape (a non-zero g.T / g.K that disagrees is an error); E, A,
// Mode, C, Drop, PadToCapacity from g.
//
// Expert ids are -1 (no expert) or in [0, E), and no token names one expert twice; the plan
// node's Do checks this and returns an error from the machine's run otherwise. The plan is not
// differentiable: gradients reach the router through the probs of Unpermute or PermuteProbs.
func NewPlan(ids, probs *G.Node, g kernels.Geometry) (*Plan, error) {
	const name = "op.NewPlan"
	if ids == nil {
		return nil, opkit.Errorf(name, "ids is nil")
	}
	s := ids.Shape()
	if len(s) != 2 {
		return nil, opkit.Errorf(name, "ids has shape %v, want (T, K)", opkit.ShapeString(s))
	}
	if g.T != 0 && g.T != s[0] {
		return nil, opkit.Errorf(name, "ids has T=%d rows but the geometry says T=%d", s[0], g.T)
	}
	if g.K != 0 && g.K != s[1] {
		return nil, opkit.Errorf(name, "ids has K=%d columns but the geometry says K=%d", s[1], g.K)
	}
	g.T, g.K = s[0], s[1]
	if err := g.Validate(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	dt, err := opkit.NodeDtype(name, "ids", ids)
	if err != nil {
		return nil, err
	}
	if dt != tensor.Int32 {
		return nil, opkit.Errorf(name, "ids has dtype %v, want int32", dt)
	}
	needProbs := g.Mode == kernels.Capacity && g.Drop == kernels.DropByProb
	if needProbs && probs == nil {
		return nil, opkit.Errorf(name, "capacity mode with drop by prob needs the probs [T,K], got nil")
	}
	children := []*G.Node{ids}
	if probs != nil {
		if err := checkNodes(name, []*G.Node{ids, probs}, "ids", "probs"); err != nil {
			return nil, err
		}
		if err := checkShape(name, "probs", probs.Shape(), dim{"T", g.T}, dim{"K", g.K}); err != nil {
			return nil, err
		}
		pdt, err := opkit.NodeDtype(name, "probs", probs)
		if err != nil {
			return nil, err
		}
		if err := checkFloat(name, "probs", pdt); err != nil {
			return nil, err
		}
		if needProbs {
			children = append(children, probs)
		}
	}
	n, err := opkit.ApplyOp(name, planOp{g: g, withProbs: needProbs}, children...)
	if err != nil {
		return nil, err
	}
	return &Plan{Node: n, Geometry: g}, nil
}

// check validates a plan passed to a node function.
func (p *Plan) check(name string) error {
	if p == nil || p.Node == nil {
		return opkit.Errorf(name, "plan is nil")
	}
	if err := p.Geometry.Validate(); err != nil {
		return opkit.Wrap(name, err)
	}
	dt, err := opkit.NodeDtype(name, "plan", p.Node)
	if err != nil {
		return err
	}
	if err := checkInt32(name, "plan", dt); err != nil {
		return err
	}
	return checkPlanShape(name, p.Geometry, p.Node.Shape())
}

// planInput checks the plan and the node x (named what) that a node function applies it to,
// and returns x's dtype.
func planInput(name string, p *Plan, x *G.Node, what string) (tensor.Dtype, error) {
	if err := p.check(name); err != nil {
		return tensor.Dtype{}, err
	}
	if err := checkNodes(name, []*G.Node{x, p.Node}, what, "plan"); err != nil {
		return tensor.Dtype{}, err
	}
	return opkit.NodeDtype(name, what, x)
}

// planOp builds the flat plan vector: ids [T,K] int32 (, probs [T,K]) -> plan [PlanLen] int32.
// probs is an input only in capacity mode with drop by prob.
type planOp struct {
	opkit.Base
	opkit.NoGrad
	g         kernels.Geometry
	withProbs bool
}

var (
	_ G.Op              = planOp{}
	_ G.SDOp            = planOp{}
	_ G.ADOp            = planOp{}
	_ G.UsePreallocDoer = planOp{}
)

const planName = "op.NewPlan"

func (op planOp) Arity() int {
	if op.withProbs {
		return 2
	}
	return 1
}

// Type is Matrix Int32 (→ Matrix p) → Vector Int32.
func (op planOp) Type() hm.Type {
	ids := G.TensorType{Dims: 2, Of: tensor.Int32}
	plan := G.TensorType{Dims: 1, Of: tensor.Int32}
	if op.withProbs {
		return hm.NewFnType(ids, G.TensorType{Dims: 2, Of: hm.TypeVariable('p')}, plan)
	}
	return hm.NewFnType(ids, plan)
}

func (op planOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	whats := []string{"ids"}
	if op.withProbs {
		whats = append(whats, "probs")
	}
	ss, err := shapesOf(planName, ds, whats...)
	if err != nil {
		return nil, err
	}
	if err := op.g.Validate(); err != nil {
		return nil, opkit.Wrap(planName, err)
	}
	for i, s := range ss {
		if err := checkShape(planName, whats[i], s, dim{"T", op.g.T}, dim{"K", op.g.K}); err != nil {
			return nil, err
		}
	}
	return tensor.Shape{op.g.PlanLen()}, nil
}

func (op planOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo builds the plan into prealloc (nil: a new tensor).
func (op planOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(planName, vs, op.Arity()); err != nil {
		return nil, err
	}
	if err := op.g.Validate(); err != nil {
		return nil, opkit.Wrap(planName, err)
	}
	tk := []dim{{"T", op.g.T}, {"K", op.g.K}}
	ids := vs[0]
	if err := checkValue(planName, "ids", ids, tensor.Int32, tk...); err != nil {
		return nil, err
	}
	var probs G.Value
	if op.withProbs {
		probs = vs[1]
		if err := checkValue(planName, "probs", probs, tensor.Dtype{}, tk...); err != nil {
			return nil, err
		}
	}
	dev, err := onDevice(planName, ids, probs)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.BuildPlan(op.g, ids, probs)
		return v, opkit.Wrap(planName, err)
	}
	idd, err := opkit.HostDense(planName, "ids", ids)
	if err != nil {
		return nil, err
	}
	idv, err := dataOf[int32](planName, "ids", idd)
	if err != nil {
		return nil, err
	}
	out, dst, err := outDense[int32](planName, prealloc, op.g.PlanLen())
	if err != nil {
		return nil, err
	}
	switch {
	case probs == nil:
		err = kernels.BuildPlan[float32](dst, op.g, idv, nil)
	case probs.Dtype() == tensor.Float32:
		var pv []float32
		if pv, err = hostFloats[float32](planName, "probs", probs); err == nil {
			err = kernels.BuildPlan(dst, op.g, idv, pv)
		}
	default:
		var pv []float64
		if pv, err = hostFloats[float64](planName, "probs", probs); err == nil {
			err = kernels.BuildPlan(dst, op.g, idv, pv)
		}
	}
	if err != nil {
		return nil, opkit.Wrap(planName, err)
	}
	return out, nil
}

func (op planOp) String() string {
	return fmt.Sprintf("op.Plan{%s probs=%v}", opkit.GeometryKey(op.g), op.withProbs)
}
func (op planOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op planOp) Hashcode() uint32      { return opkit.Hashcode(op) }
