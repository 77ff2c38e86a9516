package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Unpermute combines the expert rows back into tokens: yp [R,H], probs [T,K] or nil
// (unweighted) -> y [T,H] with
//
//	y[t] = Σ_k probs[t,k] · yp[rowOf[t,k]]
//
// summed in k order over the slots that were not dropped (probs nil: the plain sum). probs must
// have yp's dtype, except that bfloat16 rows take float32 probs (the sum is then accumulated
// in float32 and rounded once).
//
// Its gradients are dyp[rowOf[t,k]] = probs[t,k] · dy[t] (pad rows 0) and
// dprobs[t,k] = ⟨yp[rowOf[t,k]], dy[t]⟩ (0 for dropped slots).
func Unpermute(yp, probs *G.Node, p *Plan) (*G.Node, error) {
	const name = unpermuteName
	dt, err := planInput(name, p, yp, "yp")
	if err != nil {
		return nil, err
	}
	if err := checkData(name, "yp", dt); err != nil {
		return nil, err
	}
	if probs == nil {
		return opkit.ApplyOp(name, unpermuteOp{g: p.Geometry}, yp, p.Node)
	}
	if err := checkNodes(name, []*G.Node{yp, probs}, "yp", "probs"); err != nil {
		return nil, err
	}
	pdt, err := opkit.NodeDtype(name, "probs", probs)
	if err != nil {
		return nil, err
	}
	if err := checkProbsDtype(name, dt, pdt); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, unpermuteOp{g: p.Geometry, weighted: true}, yp, probs, p.Node)
}

const (
	unpermuteName          = "op.Unpermute"
	unpermuteGradRowsName  = "op.Unpermute (backward to rows)"
	unpermuteGradProbsName = "op.Unpermute (backward to probs)"
)

// unpermuteForward is the forward of Unpermute on host or device values (probs nil:
// unweighted); pre is an optional host output buffer.
func unpermuteForward(g kernels.Geometry, yp, probs, plan, pre G.Value) (G.Value, error) {
	const name = unpermuteName
	if err := checkValue(name, "yp", yp, anyData, dim{"R", g.Rows()}, dim{"H", -1}); err != nil {
		return nil, err
	}
	if probs != nil {
		if err := checkValue(name, "probs", probs, tensor.Dtype{}, dim{"T", g.T}, dim{"K", g.K}); err != nil {
			return nil, err
		}
		if err := checkProbsDtype(name, yp.Dtype(), probs.Dtype()); err != nil {
			return nil, err
		}
	}
	if err := checkValue(name, "plan", plan, tensor.Int32, planDim(g)); err != nil {
		return nil, err
	}
	if dev, err := onDevice(name, yp, probs, plan); err != nil || dev != nil {
		if err != nil {
			return nil, err
		}
		v, err := dev.UnpermuteForward(g, yp, probs, plan)
		return v, opkit.Wrap(name, err)
	}
	p, err := hostPlan(name, g, plan)
	if err != nil {
		return nil, err
	}
	switch yp.Dtype() {
	case tensor.Float32:
		return unpermuteForwardHost[float32](p, yp, probs, pre)
	case bfloat16.Dtype:
		if err := bf16Disjoint(name, []namedValue{{"y", pre}}, namedValue{"yp", yp}, namedValue{"probs", probs}, namedValue{"plan", plan}); err != nil {
			return nil, err
		}
		yf, err := widenBF16(name, "yp", yp)
		if err != nil {
			return nil, err
		}
		out, err := unpermuteForwardHost[float32](p, yf, probs, nil)
		if err != nil {
			return nil, err
		}
		return roundBF16(name, out, pre)
	}
	return unpermuteForwardHost[float64](p, yp, probs, pre)
}

func unpermuteForwardHost[F kernels.Float](p kernels.Plan, yp, probs, pre G.Value) (G.Value, error) {
	const name = unpermuteName
	src, err := hostFloats[F](name, "yp", yp)
	if err != nil {
		return nil, err
	}
	var pr []F
	if probs != nil {
		if pr, err = hostFloats[F](name, "probs", probs); err != nil {
			return nil, err
		}
	}
	H := yp.Shape()[1]
	out, y, err := outDense[F](name, pre, p.T, H)
	if err != nil {
		return nil, err
	}
	if err := kernels.UnpermuteForward(y, src, pr, p, H); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// unpermuteBackward is the backward of Unpermute from dy [T,H]: dyp [R,H] if wantRows (needs
// probs unless the forward was unweighted, probs nil) and dprobs [T,K] if wantProbs (needs yp).
// preRows and preProbs are optional host output buffers.
func unpermuteBackward(name string, g kernels.Geometry, dy, yp, probs, plan G.Value, wantRows, wantProbs bool, preRows, preProbs G.Value) (dyp, dprobs G.Value, err error) {
	if err := checkValue(name, "dy", dy, anyData, dim{"T", g.T}, dim{"H", -1}); err != nil {
		return nil, nil, err
	}
	H := dy.Shape()[1]
	if wantProbs {
		if err := checkValue(name, "yp", yp, dy.Dtype(), dim{"R", g.Rows()}, dim{"H", H}); err != nil {
			return nil, nil, err
		}
	} else {
		yp = nil
	}
	if probs != nil {
		if err := checkValue(name, "probs", probs, tensor.Dtype{}, dim{"T", g.T}, dim{"K", g.K}); err != nil {
			return nil, nil, err
		}
		if err := checkProbsDtype(name, dy.Dtype(), probs.Dtype()); err != nil {
			return nil, nil, err
		}
	}
	if err := checkValue(name, "plan", plan, tensor.Int32, planDim(g)); err != nil {
		return nil, nil, err
	}
	if dev, err := onDevice(name, dy, yp, probs, plan); err != nil || dev != nil {
		if err != nil {
			return nil, nil, err
		}
		dyp, dprobs, err := dev.UnpermuteBackward(g, dy, yp, probs, plan, wantRows, wantProbs)
		if err != nil {
			return nil, nil, opkit.Wrap(name, err)
		}
		return dyp, dprobs, nil
	}
	p, err := hostPlan(name, g, plan)
	if err != nil {
		return nil, nil, err
	}
	switch dy.Dtype() {
	case tensor.Float32:
		return unpermuteBackwardHost(name, p, dy, yp, probs, wantRows, wantProbs, preRows, preProbs, kernels.UnpermuteBackward[float32])
	case bfloat16.Dtype:
		if err := bf16Disjoint(name, []namedValue{{"dyp", preRows}, {"dprobs", preProbs}},
			namedValue{"dy", dy}, namedValue{"yp", yp}, namedValue{"probs", probs}, namedValue{"plan", plan}); err != nil {
			return nil, nil, err
		}
		return unpermuteBackwardBF16(name, p, dy, yp, probs, wantRows, wantProbs, preRows, preProbs)
	}
	return unpermuteBackwardHost(name, p, dy, yp, probs, wantRows, wantProbs, preRows, preProbs, kernels.UnpermuteBackward[float64])
}

// unpermuteBackwardHost runs the host kernel kern (kernels.UnpermuteBackward or its bfloat16
// twin) on host values.
func unpermuteBackwardHost[F kernels.Float](name string, p kernels.Plan, dy, yp, probs G.Value, wantRows, wantProbs bool, preRows, preProbs G.Value,
	kern func(dyp, dprobs, dy, yp, probs []F, p kernels.Plan, H int) error) (G.Value, G.Value, error) {
	g, err := hostFloats[F](name, "dy", dy)
	if err != nil {
		return nil, nil, err
	}
	H := dy.Shape()[1]
	var ys, pr []F
	if yp != nil {
		if ys, err = hostFloats[F](name, "yp", yp); err != nil {
			return nil, nil, err
		}
	}
	if probs != nil {
		if pr, err = hostFloats[F](name, "probs", probs); err != nil {
			return nil, nil, err
		}
	}
	var dypV, dprobsV G.Value
	var dypS, dprobsS []F
	if wantRows {
		d, s, err := outDense[F](name, preRows, p.Rows(), H)
		if err != nil {
			return nil, nil, err
		}
		dypV, dypS = d, s
	}
	if wantProbs {
		d, s, err := outDense[F](name, preProbs, p.T, p.K)
		if err != nil {
			return nil, nil, err
		}
		dprobsV, dprobsS = d, s
	}
	if err := kern(dypS, dprobsS, g, ys, pr, p, H); err != nil {
		return nil, nil, opkit.Wrap(name, err)
	}
	return dypV, dprobsV, nil
}

// unpermuteBackwardBF16 is the host backward for bfloat16 dy and yp with float32 probs: the
// bfloat16 twin of the float32 kernel (kernels.UnpermuteBackwardBF16) on widened inputs, dyp
// rounded once, dprobs float32 summed in the CUDA kernel's order.
func unpermuteBackwardBF16(name string, p kernels.Plan, dy, yp, probs G.Value, wantRows, wantProbs bool, preRows, preProbs G.Value) (G.Value, G.Value, error) {
	dyf, err := widenBF16(name, "dy", dy)
	if err != nil {
		return nil, nil, err
	}
	ypf, err := widenBF16(name, "yp", yp)
	if err != nil {
		return nil, nil, err
	}
	dyp, dprobs, err := unpermuteBackwardHost(name, p, dyf, ypf, probs, wantRows, wantProbs, nil, preProbs, kernels.UnpermuteBackwardBF16)
	if err != nil || dyp == nil {
		return dyp, dprobs, err
	}
	if dyp, err = roundBF16(name, dyp, preRows); err != nil {
		return nil, nil, err
	}
	return dyp, dprobs, nil
}

// unpermuteOp is Unpermute: (yp [R,H], probs [T,K], plan) -> y [T,H], or (yp, plan) -> y when
// unweighted.
type unpermuteOp struct {
	opkit.Base
	g        kernels.Geometry
	weighted bool
}

var (
	_ G.Op              = unpermuteOp{}
	_ G.SDOp            = unpermuteOp{}
	_ G.ADOp            = unpermuteOp{}
	_ G.UsePreallocDoer = unpermuteOp{}
)

func (op unpermuteOp) Arity() int {
	if op.weighted {
		return 3
	}
	return 2
}

// Type is Matrix a → Matrix p → Vector Int32 → Matrix a (weighted) or Matrix a → Vector Int32
// → Matrix a. The data and probs dtypes are separate type variables; Do checks them.
func (op unpermuteOp) Type() hm.Type {
	if !op.weighted {
		return matIndexType(1)
	}
	m := G.TensorType{Dims: 2, Of: hm.TypeVariable('a')}
	return hm.NewFnType(m, G.TensorType{Dims: 2, Of: hm.TypeVariable('p')}, G.TensorType{Dims: 1, Of: tensor.Int32}, m)
}
func (op unpermuteOp) String() string {
	return fmt.Sprintf("op.Unpermute{%s weighted=%v}", opkit.GeometryKey(op.g), op.weighted)
}
func (op unpermuteOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op unpermuteOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op unpermuteOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return unpermuteInferShape(unpermuteName, op, ds, "yp", false)
}

// unpermuteInferShape is the InferShape of Unpermute (rows false: x is yp [R,H], the output
// [T,H]) and of its backward to the rows (rows true: x is dy [T,H], the output [R,H]), whose
// inputs are (x, probs [T,K], plan) or (x, plan) when unweighted.
func unpermuteInferShape(name string, op unpermuteOp, ds []G.DimSizer, what string, rows bool) (tensor.Shape, error) {
	whats := []string{what, "plan"}
	if op.weighted {
		whats = []string{what, "probs", "plan"}
	}
	ss, err := shapesOf(name, ds, whats...)
	if err != nil {
		return nil, err
	}
	if err := op.g.Validate(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	in, out := dim{"R", op.g.Rows()}, op.g.T
	if rows {
		in, out = dim{"T", op.g.T}, op.g.Rows()
	}
	if err := checkShape(name, what, ss[0], in, dim{"H", -1}); err != nil {
		return nil, err
	}
	if op.weighted {
		if err := checkShape(name, "probs", ss[1], dim{"T", op.g.T}, dim{"K", op.g.K}); err != nil {
			return nil, err
		}
	}
	if err := checkPlanShape(name, op.g, ss[len(ss)-1]); err != nil {
		return nil, err
	}
	return tensor.Shape{out, ss[0][1]}, nil
}

func (op unpermuteOp) Do(vs ...G.Value) (G.Value, error) { return op.UsePreallocDo(nil, vs...) }

// UsePreallocDo writes y into prealloc (nil: a new tensor).
func (op unpermuteOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	if err := opkit.CheckArity(unpermuteName, vs, op.Arity()); err != nil {
		return nil, err
	}
	if op.weighted {
		return unpermuteForward(op.g, vs[0], vs[1], vs[2], prealloc)
	}
	return unpermuteForward(op.g, vs[0], nil, vs[1], prealloc)
}

// DiffWRT: yp and probs yes, plan no.
func (op unpermuteOp) DiffWRT(n int) []bool {
	if op.weighted {
		return []bool{true, true, false}
	}
	return []bool{true, false}
}

// SymDiff builds dyp = (probs ·) grad permuted to the rows and dprobs = ⟨yp rows, grad⟩.
func (op unpermuteOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	return unpermuteSymDiff(unpermuteName, op, inputs, grad, unpermuteGradRowsName, unpermuteGradRowsOp(op), false)
}

// unpermuteSymDiff is the SymDiff of Unpermute and of its backward to the rows, which are each
// other's adjoints: inputs are (x, probs, plan) or (x, plan) when unweighted, where x is yp
// for Unpermute and dy for the rows backward. The gradient to x is adj(grad, probs, plan) (adj
// is the other op, adjName its name) and the gradient to probs is the backward to the probs of
// (grad, x) — or of (x, grad) when swap is set, since that op takes (dy, yp) in that order.
func unpermuteSymDiff(name string, op unpermuteOp, inputs G.Nodes, grad *G.Node, adjName string, adj G.Op, swap bool) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, opkit.Errorf(name, "SymDiff got %d inputs, want %d", len(inputs), op.Arity())
	}
	if !op.weighted {
		dx, err := opkit.ApplyOp(adjName, adj, grad, inputs[1])
		if err != nil {
			return nil, err
		}
		return G.Nodes{dx, nil}, nil
	}
	x, probs, plan := inputs[0], inputs[1], inputs[2]
	dx, err := opkit.ApplyOp(adjName, adj, grad, probs, plan)
	if err != nil {
		return nil, err
	}
	pdt, err := opkit.NodeDtype(name, "probs", probs)
	if err != nil {
		return nil, err
	}
	dy, yp := grad, x
	if swap {
		dy, yp = x, grad
	}
	dprobs, err := opkit.ApplyOp(unpermuteGradProbsName, unpermuteGradProbsOp{g: op.g, pdt: pdt}, dy, yp, plan)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx, dprobs, nil}, nil
}

// DoDiff runs the backward kernel once for both gradients and adds them into yp's and probs'
// gradients.
func (op unpermuteOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = unpermuteName
	if len(inputs) != op.Arity() {
		return opkit.Errorf(name, "DoDiff got %d inputs, want %d", len(inputs), op.Arity())
	}
	dy, err := output.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	yp, plan := inputs[0], inputs[len(inputs)-1]
	var probsV G.Value
	if op.weighted {
		probsV = inputs[1].Value()
	}
	dyp, dprobs, err := unpermuteBackward(name, op.g, dy, yp.Value(), probsV, plan.Value(), true, op.weighted, nil, nil)
	if err != nil {
		return err
	}
	gyp, err := yp.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	var gp G.Value
	if op.weighted {
		if gp, err = inputs[1].Grad(); err != nil {
			return opkit.Wrap(name, err)
		}
	}
	ups := []gradUpdate{{"yp", gyp, dyp}}
	if op.weighted {
		ups = append(ups, gradUpdate{"probs", gp, dprobs})
	}
	return accumulate(name, ups...)
}

// unpermuteGradRowsOp is Unpermute's backward to the rows: (dy [T,H], probs [T,K], plan) ->
// dyp [R,H] with dyp[rowOf[t,k]] = probs[t,k]·dy[t], or (dy, plan) -> dyp when unweighted. It
// is linear in dy (its adjoint is Unpermute) and in probs (its adjoint is the backward to the
// probs), so its own gradients are cheap.
type unpermuteGradRowsOp unpermuteOp

var (
	_ G.Op              = unpermuteGradRowsOp{}
	_ G.SDOp            = unpermuteGradRowsOp{}
	_ G.ADOp            = unpermuteGradRowsOp{}
	_ G.UsePreallocDoer = unpermuteGradRowsOp{}
)

func (op unpermuteGradRowsOp) Arity() int    { return unpermuteOp(op).Arity() }
func (op unpermuteGradRowsOp) Type() hm.Type { return unpermuteOp(op).Type() }
func (op unpermuteGradRowsOp) String() string {
	return fmt.Sprintf("op.UnpermuteGradRows{%s weighted=%v}", opkit.GeometryKey(op.g), op.weighted)
}
func (op unpermuteGradRowsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op unpermuteGradRowsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op unpermuteGradRowsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return unpermuteInferShape(unpermuteGradRowsName, unpermuteOp(op), ds, "dy", true)
}

func (op unpermuteGradRowsOp) Do(vs ...G.Value) (G.Value, error) {
	return op.UsePreallocDo(nil, vs...)
}

// UsePreallocDo writes dyp into prealloc (nil: a new tensor).
func (op unpermuteGradRowsOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	const name = unpermuteGradRowsName
	if err := opkit.CheckArity(name, vs, op.Arity()); err != nil {
		return nil, err
	}
	var probs G.Value
	if op.weighted {
		probs = vs[1]
	}
	dyp, _, err := unpermuteBackward(name, op.g, vs[0], nil, probs, vs[len(vs)-1], true, false, prealloc, nil)
	return dyp, err
}

// DiffWRT: dy and probs yes, plan no.
func (op unpermuteGradRowsOp) DiffWRT(n int) []bool { return unpermuteOp(op).DiffWRT(n) }

// SymDiff builds d(dy) = Unpermute(grad, probs) and d(probs) = ⟨grad rows, dy⟩.
func (op unpermuteGradRowsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	return unpermuteSymDiff(unpermuteGradRowsName, unpermuteOp(op), inputs, grad, unpermuteName, unpermuteOp(op), true)
}

// DoDiff adds Unpermute(output grad, probs) into dy's gradient and ⟨output grad rows, dy⟩ into
// probs' gradient.
func (op unpermuteGradRowsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = unpermuteGradRowsName
	if len(inputs) != op.Arity() {
		return opkit.Errorf(name, "DoDiff got %d inputs, want %d", len(inputs), op.Arity())
	}
	gout, err := output.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	dy, plan := inputs[0], inputs[len(inputs)-1]
	var probsV G.Value
	if op.weighted {
		probsV = inputs[1].Value()
	}
	ddy, err := unpermuteForward(op.g, gout, probsV, plan.Value(), nil)
	if err != nil {
		return err
	}
	var dprobs G.Value
	if op.weighted {
		if _, dprobs, err = unpermuteBackward(name, op.g, dy.Value(), gout, nil, plan.Value(), false, true, nil, nil); err != nil {
			return err
		}
	}
	gdy, err := dy.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	ups := []gradUpdate{{"dy", gdy, ddy}}
	if op.weighted {
		gp, err := inputs[1].Grad()
		if err != nil {
			return opkit.Wrap(name, err)
		}
		ups = append(ups, gradUpdate{"probs", gp, dprobs})
	}
	return accumulate(name, ups...)
}

// unpermuteGradProbsOp is Unpermute's backward to the probs: (dy [T,H], yp [R,H], plan) ->
// dprobs [T,K] with dprobs[t,k] = ⟨yp[rowOf[t,k]], dy[t]⟩. pdt is the probs dtype (the output
// dtype, which the inputs do not fix). It is linear in dy (its adjoint is the weighted
// Unpermute of yp) and in yp (its adjoint is the backward to the rows).
type unpermuteGradProbsOp struct {
	opkit.Base
	g   kernels.Geometry
	pdt tensor.Dtype
}

var (
	_ G.Op              = unpermuteGradProbsOp{}
	_ G.SDOp            = unpermuteGradProbsOp{}
	_ G.ADOp            = unpermuteGradProbsOp{}
	_ G.UsePreallocDoer = unpermuteGradProbsOp{}
)

func (op unpermuteGradProbsOp) Arity() int { return 3 }

// Type is Matrix a → Matrix a → Vector Int32 → Matrix pdt.
func (op unpermuteGradProbsOp) Type() hm.Type {
	m := G.TensorType{Dims: 2, Of: hm.TypeVariable('a')}
	return hm.NewFnType(m, m, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: op.pdt})
}
func (op unpermuteGradProbsOp) String() string {
	return fmt.Sprintf("op.UnpermuteGradProbs{%s probs=%v}", opkit.GeometryKey(op.g), op.pdt)
}
func (op unpermuteGradProbsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op unpermuteGradProbsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op unpermuteGradProbsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = unpermuteGradProbsName
	ss, err := shapesOf(name, ds, "dy", "yp", "plan")
	if err != nil {
		return nil, err
	}
	if err := op.g.Validate(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if err := checkShape(name, "dy", ss[0], dim{"T", op.g.T}, dim{"H", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "yp", ss[1], dim{"R", op.g.Rows()}, dim{"H", ss[0][1]}); err != nil {
		return nil, err
	}
	if err := checkPlanShape(name, op.g, ss[2]); err != nil {
		return nil, err
	}
	return tensor.Shape{op.g.T, op.g.K}, nil
}

func (op unpermuteGradProbsOp) Do(vs ...G.Value) (G.Value, error) {
	return op.UsePreallocDo(nil, vs...)
}

// UsePreallocDo writes dprobs into prealloc (nil: a new tensor).
func (op unpermuteGradProbsOp) UsePreallocDo(prealloc G.Value, vs ...G.Value) (G.Value, error) {
	const name = unpermuteGradProbsName
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, err
	}
	if err := checkProbsDtype(name, vs[0].Dtype(), op.pdt); err != nil {
		return nil, err
	}
	_, dprobs, err := unpermuteBackward(name, op.g, vs[0], vs[1], nil, vs[2], false, true, nil, prealloc)
	return dprobs, err
}

// DiffWRT: dy and yp yes, plan no.
func (op unpermuteGradProbsOp) DiffWRT(n int) []bool { return []bool{true, true, false} }

// SymDiff builds d(dy) = Unpermute(yp, grad) and d(yp) = grad·dy permuted to the rows.
func (op unpermuteGradProbsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	const name = unpermuteGradProbsName
	if len(inputs) != 3 {
		return nil, opkit.Errorf(name, "SymDiff got %d inputs, want 3", len(inputs))
	}
	dy, yp, plan := inputs[0], inputs[1], inputs[2]
	w := unpermuteOp{g: op.g, weighted: true}
	ddy, err := opkit.ApplyOp(unpermuteName, w, yp, grad, plan)
	if err != nil {
		return nil, err
	}
	dyp, err := opkit.ApplyOp(unpermuteGradRowsName, unpermuteGradRowsOp(w), dy, grad, plan)
	if err != nil {
		return nil, err
	}
	return G.Nodes{ddy, dyp, nil}, nil
}

// DoDiff adds Unpermute(yp, output grad) into dy's gradient and output grad·dy permuted to
// the rows into yp's gradient.
func (op unpermuteGradProbsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = unpermuteGradProbsName
	if len(inputs) != 3 {
		return opkit.Errorf(name, "DoDiff got %d inputs, want 3", len(inputs))
	}
	gout, err := output.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	dy, yp, plan := inputs[0], inputs[1], inputs[2]
	ddy, err := unpermuteForward(op.g, yp.Value(), gout, plan.Value(), nil)
	if err != nil {
		return err
	}
	dyp, _, err := unpermuteBackward(name, op.g, dy.Value(), nil, gout, plan.Value(), true, false, nil, nil)
	if err != nil {
		return err
	}
	gdy, err := dy.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	gyp, err := yp.Grad()
	if err != nil {
		return opkit.Wrap(name, err)
	}
	return accumulate(name, gradUpdate{"dy", gdy, ddy}, gradUpdate{"yp", gyp, dyp})
}
