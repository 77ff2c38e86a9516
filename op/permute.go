package op

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Permute dispatches tokens to their experts: x [T,H] -> xp [R,H] with
// xp[rowOf[t,k]] = x[t], expert-major, every pad and unused row zero.
//
// Its gradient is dx[t] = Σ_k dxp[rowOf[t,k]], summed in k order.
func Permute(x *G.Node, p *Plan) (*G.Node, error) {
	const name = permuteName
	dt, err := planInput(name, p, x, "x")
	if err != nil {
		return nil, err
	}
	if err := checkData(name, "x", dt); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, permuteOp{g: p.Geometry}, x, p.Node)
}

const (
	permuteName     = "op.Permute"
	permuteGradName = "op.Permute (backward)"
)

// matIndexType is Matrix a → (Int32 tensor of idxDims dims) → Matrix a, built fresh on every
// call: the type of an op that maps rows through an index (a plan, ids).
func matIndexType(idxDims int) hm.Type {
	m := G.TensorType{Dims: 2, Of: hm.TypeVariable('a')}
	return hm.NewFnType(m, G.TensorType{Dims: idxDims, Of: tensor.Int32}, m)
}

// permuteShapes checks (rows [in,H], plan) and returns H.
func permuteShapes(name string, g kernels.Geometry, ds []G.DimSizer, what string, in dim) (int, error) {
	ss, err := shapesOf(name, ds, what, "plan")
	if err != nil {
		return 0, err
	}
	if err := g.Validate(); err != nil {
		return 0, opkit.Wrap(name, err)
	}
	if err := checkShape(name, what, ss[0], in, dim{"H", -1}); err != nil {
		return 0, err
	}
	if err := checkPlanShape(name, g, ss[1]); err != nil {
		return 0, err
	}
	return ss[0][1], nil
}

// permuteForward is the forward of Permute on host or device values; pre is an optional host
// output buffer.
func permuteForward(g kernels.Geometry, x, plan, pre G.Value) (G.Value, error) {
	const name = permuteName
	if err := checkValue(name, "x", x, anyData, dim{"T", g.T}, dim{"H", -1}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "plan", plan, tensor.Int32, planDim(g)); err != nil {
		return nil, err
	}
	if dev, err := onDevice(name, x, plan); err != nil || dev != nil {
		if err != nil {
			return nil, err
		}
		v, err := dev.PermuteForward(g, x, plan)
		return v, opkit.Wrap(name, err)
	}
	p, err := hostPlan(name, g, plan)
	if err != nil {
		return nil, err
	}
	switch x.Dtype() {
	case tensor.Float32:
		return permuteForwardHost[float32](p, x, pre)
	case bfloat16.Dtype:
		if err := bf16Disjoint(name, []namedValue{{"xp", pre}}, namedValue{"x", x}, namedValue{"plan", plan}); err != nil {
			return nil, err
		}
		xf, err := widenBF16(name, "x", x)
		if err != nil {
			return nil, err
		}
		out, err := permuteForwardHost[float32](p, xf, nil)
		if err != nil {
			return nil, err
		}
		return roundBF16(name, out, pre)
	}
	return permuteForwardHost[float64](p, x, pre)
}

func permuteForwardHost[F kernels.Float](p kernels.Plan, x, pre G.Value) (G.Value, error) {
	const name = permuteName
	xs, err := hostFloats[F](name, "x", x)
	if err != nil {
		return nil, err
	}
	H := x.Shape()[1]
	out, xp, err := outDense[F](name, pre, p.Rows(), H)
	if err != nil {
		return nil, err
	}
	if err := kernels.PermuteForward(xp, xs, p, H); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// permuteBackward is the backward of Permute: dxp [R,H] -> dx [T,H].
func permuteBackward(g kernels.Geometry, dxp, plan, pre G.Value) (G.Value, error) {
	const name = permuteGradName
	if err := checkValue(name, "dxp", dxp, anyData, dim{"R", g.Rows()}, dim{"H", -1}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "plan", plan, tensor.Int32, planDim(g)); err != nil {
		return nil, err
	}
	if dev, err := onDevice(name, dxp, plan); err != nil || dev != nil {
		if err != nil {
			return nil, err
		}
		v, err := dev.PermuteBackward(g, dxp, plan)
		return v, opkit.Wrap(name, err)
	}
	p, err := hostPlan(name, g, plan)
	if err != nil {
		return nil, err
	}
	switch dxp.Dtype() {
	case tensor.Float32:
		return permuteBackwardHost[float32](p, dxp, pre)
	case bfloat16.Dtype:
		if err := bf16Disjoint(name, []namedValue{{"dx", pre}}, namedValue{"dxp", dxp}, namedValue{"plan", plan}); err != nil {
			return nil, err
		}
		df, err := widenBF16(name, "dxp", dxp)
		if err != nil {
			return nil, err
		}
		out, err := permuteBackwardHost[float32](p, df, nil)
		if err != nil {
			return nil, err
		}
		return roundBF16(name, out, pre)
	}
	return permuteBackwardHost[float64](p, dxp, pre)
}

func permuteBackwardHost[F kernels.Float](p kernels.Plan, dxp, pre G.Value) (G.Value, error) {
	const name = permuteGradName
	src, err := hostFloats[F](name, "dxp", dxp)
	if err != nil {
		return nil, err
	}
	H := dxp.Shape()[1]
	out, dx, err := outDense[F](name, pre, p.T, H)
	if err != nil {
		return nil, err
	}
	if err := kernels.PermuteBackward(dx, src, p, H); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// permuteOp is Permute: (x [T,H], plan) -> xp [R,H].
type permuteOp struct {
	opkit.Base
	g kernels.Geometry
}

var (
	_ G.Op              = permuteOp{}
	_ G.SDOp            = permuteOp{}
	_ G.ADOp            = permuteOp{}
	_ G.UsePreallocDoer = permuteOp{}
)

func (op permuteOp) Arity() int            { return 2 }
func (op permuteOp) Type() hm.Type         { return matIndexType(1) }
func (op permuteOp) String() string        { return "op.Permute{" + opkit.GeometryKey(op.g) + "}" }
func (op permuteOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op permuteOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op permuteOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	H, err := permuteShapes(permuteName, op.g, ds, "x", dim{"T", op.g.T})
	if err != nil {
		return nil, err
	}
	return tensor.Shape{op.g.Rows(), H}, nil
}

func (op permuteOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo writes xp into prealloc (nil: a new tensor).
func (op permuteOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(permuteName, vs, 2); err != nil {
		return nil, err
	}
	return permuteForward(op.g, vs[0], vs[1], prealloc)
}

// DiffWRT: x yes, plan no.
func (op permuteOp) DiffWRT(n int) []bool { return []bool{true, false} }

// SymDiff builds dx = permute-backward(grad, plan).
func (op permuteOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(permuteName, "SymDiff got %d inputs, want 2", len(inputs))
	}
	dx, err := opkit.ApplyOp(permuteGradName, permuteGradOp(op), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, nil}, nil
}

// DoDiff adds permute-backward(output grad) into x's gradient.
func (op permuteOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	if len(inputs) != 2 {
		return opkit.Errorf(permuteName, "DoDiff got %d inputs, want 2", len(inputs))
	}
	gy, err := output.Grad()
	if err != nil {
		return opkit.Wrap(permuteName, err)
	}
	dx, err := permuteBackward(op.g, gy, inputs[1].Value(), nil)
	if err != nil {
		return err
	}
	gx, err := inputs[0].Grad()
	if err != nil {
		return opkit.Wrap(permuteName, err)
	}
	return accumulate(permuteName, gradUpdate{"x", gx, dx})
}

// permuteGradOp is the backward of Permute: (dxp [R,H], plan) -> dx [T,H]. It is the adjoint
// of permuteOp, so each is the other's gradient.
type permuteGradOp struct {
	opkit.Base
	g kernels.Geometry
}

var (
	_ G.Op              = permuteGradOp{}
	_ G.SDOp            = permuteGradOp{}
	_ G.ADOp            = permuteGradOp{}
	_ G.UsePreallocDoer = permuteGradOp{}
)

func (op permuteGradOp) Arity() int            { return 2 }
func (op permuteGradOp) Type() hm.Type         { return matIndexType(1) }
func (op permuteGradOp) String() string        { return "op.PermuteGrad{" + opkit.GeometryKey(op.g) + "}" }
func (op permuteGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op permuteGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op permuteGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	H, err := permuteShapes(permuteGradName, op.g, ds, "dxp", dim{"R", op.g.Rows()})
	if err != nil {
		return nil, err
	}
	return tensor.Shape{op.g.T, H}, nil
}

func (op permuteGradOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo writes dx into prealloc (nil: a new tensor).
func (op permuteGradOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(permuteGradName, vs, 2); err != nil {
		return nil, err
	}
	return permuteBackward(op.g, vs[0], vs[1], prealloc)
}

// DiffWRT: dxp yes, plan no.
func (op permuteGradOp) DiffWRT(n int) []bool { return []bool{true, false} }

// SymDiff builds d(dxp) = permute(grad, plan).
func (op permuteGradOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(permuteGradName, "SymDiff got %d inputs, want 2", len(inputs))
	}
	d, err := opkit.ApplyOp(permuteName, permuteOp(op), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff adds permute(output grad) into dxp's gradient.
func (op permuteGradOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	if len(inputs) != 2 {
		return opkit.Errorf(permuteGradName, "DoDiff got %d inputs, want 2", len(inputs))
	}
	gy, err := output.Grad()
	if err != nil {
		return opkit.Wrap(permuteGradName, err)
	}
	d, err := permuteForward(op.g, gy, inputs[1].Value(), nil)
	if err != nil {
		return err
	}
	gx, err := inputs[0].Grad()
	if err != nil {
		return opkit.Wrap(permuteGradName, err)
	}
	return accumulate(permuteGradName, gradUpdate{"dxp", gx, d})
}
