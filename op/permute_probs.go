package op

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// PermuteProbs permutes the router probs alongside the rows: probs [T,K] -> pp [R] with
// pp[rowOf[t,k]] = probs[t,k] and 0 in pad and unused rows, so that an expert can scale its
// own activation by the prob (and Unpermute then runs unweighted).
//
// Its gradient is dprobs[t,k] = dpp[rowOf[t,k]], 0 for dropped slots.
func PermuteProbs(probs *G.Node, p *Plan) (*G.Node, error) {
	const name = permuteProbsName
	dt, err := planInput(name, p, probs, "probs")
	if err != nil {
		return nil, err
	}
	if err := checkFloat(name, "probs", dt); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, permuteProbsOp{g: p.Geometry}, probs, p.Node)
}

const (
	permuteProbsName     = "op.PermuteProbs"
	permuteProbsGradName = "op.PermuteProbs (backward)"
)

// permuteProbsForward is the forward of PermuteProbs on host or device values; pre is an
// optional host output buffer.
func permuteProbsForward(g kernels.Geometry, probs, plan, pre G.Value) (G.Value, error) {
	const name = permuteProbsName
	if err := checkValue(name, "probs", probs, tensor.Dtype{}, dim{"T", g.T}, dim{"K", g.K}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "plan", plan, tensor.Int32, planDim(g)); err != nil {
		return nil, err
	}
	if dev, err := onDevice(name, probs, plan); err != nil || dev != nil {
		if err != nil {
			return nil, err
		}
		v, err := dev.PermuteProbsForward(g, probs, plan)
		return v, opkit.Wrap(name, err)
	}
	p, err := hostPlan(name, g, plan)
	if err != nil {
		return nil, err
	}
	if probs.Dtype() == tensor.Float32 {
		return permuteProbsForwardHost[float32](p, probs, pre)
	}
	return permuteProbsForwardHost[float64](p, probs, pre)
}

func permuteProbsForwardHost[F kernels.Float](p kernels.Plan, probs, pre G.Value) (G.Value, error) {
	const name = permuteProbsName
	src, err := hostFloats[F](name, "probs", probs)
	if err != nil {
		return nil, err
	}
	out, pp, err := outDense[F](name, pre, p.Rows())
	if err != nil {
		return nil, err
	}
	if err := kernels.PermuteProbsForward(pp, src, p); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// permuteProbsBackward is the backward of PermuteProbs: dpp [R] -> dprobs [T,K].
func permuteProbsBackward(g kernels.Geometry, dpp, plan, pre G.Value) (G.Value, error) {
	const name = permuteProbsGradName
	if err := checkValue(name, "dpp", dpp, tensor.Dtype{}, dim{"R", g.Rows()}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "plan", plan, tensor.Int32, planDim(g)); err != nil {
		return nil, err
	}
	if dev, err := onDevice(name, dpp, plan); err != nil || dev != nil {
		if err != nil {
			return nil, err
		}
		v, err := dev.PermuteProbsBackward(g, dpp, plan)
		return v, opkit.Wrap(name, err)
	}
	p, err := hostPlan(name, g, plan)
	if err != nil {
		return nil, err
	}
	if dpp.Dtype() == tensor.Float32 {
		return permuteProbsBackwardHost[float32](p, dpp, pre)
	}
	return permuteProbsBackwardHost[float64](p, dpp, pre)
}

func permuteProbsBackwardHost[F kernels.Float](p kernels.Plan, dpp, pre G.Value) (G.Value, error) {
	const name = permuteProbsGradName
	src, err := hostFloats[F](name, "dpp", dpp)
	if err != nil {
		return nil, err
	}
	out, dprobs, err := outDense[F](name, pre, p.T, p.K)
	if err != nil {
		return nil, err
	}
	if err := kernels.PermuteProbsBackward(dprobs, src, p); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// permuteProbsOp is PermuteProbs: (probs [T,K], plan) -> pp [R].
type permuteProbsOp struct {
	opkit.Base
	g kernels.Geometry
}

var (
	_ G.Op              = permuteProbsOp{}
	_ G.SDOp            = permuteProbsOp{}
	_ G.ADOp            = permuteProbsOp{}
	_ G.UsePreallocDoer = permuteProbsOp{}
)

func (op permuteProbsOp) Arity() int { return 2 }

// Type is Matrix p → Vector Int32 → Vector p.
func (op permuteProbsOp) Type() hm.Type {
	p := hm.TypeVariable('p')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: p}, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 1, Of: p})
}
func (op permuteProbsOp) String() string        { return "op.PermuteProbs{" + opkit.GeometryKey(op.g) + "}" }
func (op permuteProbsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op permuteProbsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op permuteProbsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = permuteProbsName
	ss, err := shapesOf(name, ds, "probs", "plan")
	if err != nil {
		return nil, err
	}
	if err := op.g.Validate(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if err := checkShape(name, "probs", ss[0], dim{"T", op.g.T}, dim{"K", op.g.K}); err != nil {
		return nil, err
	}
	if err := checkPlanShape(name, op.g, ss[1]); err != nil {
		return nil, err
	}
	return tensor.Shape{op.g.Rows()}, nil
}

func (op permuteProbsOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo writes pp into prealloc (nil: a new tensor).
func (op permuteProbsOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(permuteProbsName, vs, 2); err != nil {
		return nil, err
	}
	return permuteProbsForward(op.g, vs[0], vs[1], prealloc)
}

// DiffWRT: probs yes, plan no.
func (op permuteProbsOp) DiffWRT(n int) []bool { return []bool{true, false} }

// SymDiff builds dprobs = permute-probs-backward(grad, plan).
func (op permuteProbsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(permuteProbsName, "SymDiff got %d inputs, want 2", len(inputs))
	}
	d, err := opkit.ApplyOp(permuteProbsGradName, permuteProbsGradOp(op), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff adds permute-probs-backward(output grad) into probs' gradient.
func (op permuteProbsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = permuteProbsName
	if len(inputs) != 2 {
		return opkit.Errorf(name, "DoDiff got %d inputs, want 2", len(inputs))
	}
	gy, err := output.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	d, err := permuteProbsBackward(op.g, gy, inputs[1].Value(), nil)
	if err != nil {
		return err
	}
	gp, err := inputs[0].Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	return accumulate(name, gradUpdate{"probs", gp, d})
}

// permuteProbsGradOp is the backward of PermuteProbs: (dpp [R], plan) -> dprobs [T,K]. It is
// the adjoint of permuteProbsOp, so each is the other's gradient.
type permuteProbsGradOp struct {
	opkit.Base
	g kernels.Geometry
}

var (
	_ G.Op              = permuteProbsGradOp{}
	_ G.SDOp            = permuteProbsGradOp{}
	_ G.ADOp            = permuteProbsGradOp{}
	_ G.UsePreallocDoer = permuteProbsGradOp{}
)

func (op permuteProbsGradOp) Arity() int { return 2 }

// Type is Vector p → Vector Int32 → Matrix p.
func (op permuteProbsGradOp) Type() hm.Type {
	p := hm.TypeVariable('p')
	return hm.NewFnType(G.TensorType{Dims: 1, Of: p}, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: p})
}
func (op permuteProbsGradOp) String() string {
	return "op.PermuteProbsGrad{" + opkit.GeometryKey(op.g) + "}"
}
func (op permuteProbsGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op permuteProbsGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op permuteProbsGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = permuteProbsGradName
	ss, err := shapesOf(name, ds, "dpp", "plan")
	if err != nil {
		return nil, err
	}
	if err := op.g.Validate(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if err := checkShape(name, "dpp", ss[0], dim{"R", op.g.Rows()}); err != nil {
		return nil, err
	}
	if err := checkPlanShape(name, op.g, ss[1]); err != nil {
		return nil, err
	}
	return tensor.Shape{op.g.T, op.g.K}, nil
}

func (op permuteProbsGradOp) Do(vs ...G.Value) (G.Value, error) {
	return op.UsePreallocDo(nil, vs...)
}

// UsePreallocDo writes dprobs into prealloc (nil: a new tensor).
func (op permuteProbsGradOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(permuteProbsGradName, vs, 2); err != nil {
		return nil, err
	}
	return permuteProbsBackward(op.g, vs[0], vs[1], prealloc)
}

// DiffWRT: dpp yes, plan no.
func (op permuteProbsGradOp) DiffWRT(n int) []bool { return []bool{true, false} }

// SymDiff builds d(dpp) = permute-probs(grad, plan).
func (op permuteProbsGradOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(permuteProbsGradName, "SymDiff got %d inputs, want 2", len(inputs))
	}
	d, err := opkit.ApplyOp(permuteProbsName, permuteProbsOp(op), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff adds permute-probs(output grad) into dpp's gradient.
func (op permuteProbsGradOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = permuteProbsGradName
	if len(inputs) != 2 {
		return opkit.Errorf(name, "DoDiff got %d inputs, want 2", len(inputs))
	}
	gy, err := output.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	d, err := permuteProbsForward(op.g, gy, inputs[1].Value(), nil)
	if err != nil {
		return err
	}
	gp, err := inputs[0].Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	return accumulate(name, gradUpdate{"dpp", gp, d})
}
