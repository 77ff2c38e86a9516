package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Grouped expert matmul: z [R,N] = xp [R,H] · w[e] [H,N] on the real rows of each expert e's
// segment of the plan (rows [offsets[e], offsets[e]+counts[e])); pad rows and rows past
// offsets[E] are 0. Gradients flow to xp and w; experts that got no row get a zero weight
// gradient. The CPU kernels are kernels.GroupedMatMul*; on device values (package device) the
// ops run kernels.CUDA's grouped matmul: CUTLASS grouped GEMMs that read the plan's sizes on
// the device (bfloat16 on sm_90a with H and N multiples of 8; float32 and float64 on compute
// capability 8.0 and later), else cuBLAS, which reads the plan's offsets to the host with one
// small synchronous copy per call (docs/grouped-gemm.md). Data may be float32, float64 or
// bfloat16 (float32 accumulation, output rounded once; the CPU widens bfloat16 to float32).

// GroupedMatMul multiplies each expert's segment of the permuted rows xp [R,H] by that
// expert's weight w [E,H,N] and returns z [R,N]. p is the routing plan xp was permuted with.
func GroupedMatMul(xp, w *G.Node, p *Plan) (*G.Node, error) {
	if p == nil || p.Node == nil {
		return nil, fmt.Errorf("gomoe: GroupedMatMul: nil plan")
	}
	return groupedMatMulWithPlan(xp, w, p.Node, p.Geometry)
}

// groupedMatMulWithPlan is GroupedMatMul for a plan given as its flat int32 node and geometry
// (see kernels.Geometry.View for the layout).
func groupedMatMulWithPlan(xp, w, plan *G.Node, geo kernels.Geometry) (*G.Node, error) {
	if err := geo.Validate(); err != nil {
		return nil, opkit.Wrap("GroupedMatMul", err)
	}
	if xp == nil || w == nil || plan == nil {
		return nil, fmt.Errorf("gomoe: GroupedMatMul: nil input node")
	}
	if plan.Dtype() != tensor.Int32 {
		return nil, fmt.Errorf("gomoe: GroupedMatMul: plan has dtype %v, want int32", plan.Dtype())
	}
	if xp.Dtype() != w.Dtype() {
		return nil, fmt.Errorf("gomoe: GroupedMatMul: xp is %v but w is %v", xp.Dtype(), w.Dtype())
	}
	if err := gmmDtype(xp.Dtype()); err != nil {
		return nil, err
	}
	if err := checkNodes("GroupedMatMul", []*G.Node{xp, w, plan}, "xp", "w", "plan"); err != nil {
		return nil, err
	}
	return opkit.ApplyOp("GroupedMatMul", gmmOp{geo: geo}, xp, w, plan)
}

// gmmDtype checks the data dtype of the grouped matmul: float32, float64 or bfloat16 (on the
// CPU, bfloat16 inputs are widened to float32, multiplied in float32 and the output rounded
// once; on the GPU, cuBLAS reads bfloat16 and accumulates in float32).
func gmmDtype(dt tensor.Dtype) error {
	if dt != tensor.Float32 && dt != tensor.Float64 && dt != bfloat16.Dtype {
		return fmt.Errorf("gomoe: GroupedMatMul: dtype %v, want float32, float64 or bfloat16", dt)
	}
	return nil
}

// gmmDispatch runs a grouped matmul op's Do on the device when its inputs are device values
// (dev runs with their backend), or, for host bfloat16 inputs, runs do on the inputs widened to float32 and
// rounds the result once (done true). Otherwise the caller runs the host float kernels.
func gmmDispatch(name string, vs []G.Value, dev func(device.Backend) (G.Value, error), do func(vs ...G.Value) (G.Value, error)) (out G.Value, done bool, err error) {
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, true, err
	}
	onDev, err := onDevice(name, vs...)
	if err != nil {
		return nil, true, err
	}
	if onDev != nil {
		v, err := dev(onDev)
		if err != nil {
			return nil, true, opkit.Wrap(name, err)
		}
		return v, true, nil
	}
	if vs[0].Dtype() != bfloat16.Dtype {
		return nil, false, nil
	}
	if vs[1].Dtype() != bfloat16.Dtype {
		return nil, true, opkit.Errorf(name, "input 0 is bfloat16 but input 1 is %v", vs[1].Dtype())
	}
	wide := make([]G.Value, len(vs))
	for i, v := range vs {
		wide[i] = v
		if v.Dtype() == bfloat16.Dtype {
			if wide[i], err = widenBF16(name, fmt.Sprintf("input %d", i), v); err != nil {
				return nil, true, err
			}
		}
	}
	f, err := do(wide...)
	if err != nil {
		return nil, true, err
	}
	out, err = roundBF16(name, f, nil)
	return out, true, err
}

func gmmFloat(dt tensor.Dtype) error {
	if dt != tensor.Float32 && dt != tensor.Float64 {
		return fmt.Errorf("gomoe: GroupedMatMul: dtype %v, want float32 or float64", dt)
	}
	return nil
}

// gmmShapes checks the shapes of xp [R,H] (or dz [R,N]), w [E,H,N] and plan against geo and
// returns H and N. which names the first input for errors.
func gmmShapes(name string, geo kernels.Geometry, ds []G.DimSizer, rowsIdx, wIdx, planIdx int) (H, N int, err error) {
	shape := func(i int) (tensor.Shape, error) {
		if i >= len(ds) {
			return nil, fmt.Errorf("gomoe: %s: want %d inputs, got %d", name, 3, len(ds))
		}
		s, ok := ds[i].(tensor.Shape)
		if !ok {
			return nil, fmt.Errorf("gomoe: %s: input %d has no static shape (%T)", name, i, ds[i])
		}
		return s, nil
	}
	ps, err := shape(planIdx)
	if err != nil {
		return 0, 0, err
	}
	if ps.TotalSize() != geo.PlanLen() || ps.Dims() != 1 {
		return 0, 0, fmt.Errorf("gomoe: %s: plan has shape %v, want (%d) for %v", name, ps, geo.PlanLen(), geo)
	}
	if wIdx >= 0 {
		ws, err := shape(wIdx)
		if err != nil {
			return 0, 0, err
		}
		if ws.Dims() != 3 || ws[0] != geo.E {
			return 0, 0, fmt.Errorf("gomoe: %s: w has shape %v, want (E=%d, H, N)", name, ws, geo.E)
		}
		H, N = ws[1], ws[2]
	}
	return H, N, nil
}

func gmmRowsShape(name string, geo kernels.Geometry, s G.DimSizer, cols int) error {
	xs, ok := s.(tensor.Shape)
	if !ok {
		return fmt.Errorf("gomoe: %s: rows input has no static shape (%T)", name, s)
	}
	if xs.Dims() != 2 || xs[0] != geo.Rows() || xs[1] != cols {
		return fmt.Errorf("gomoe: %s: rows input has shape %v, want (R=%d, %d)", name, xs, geo.Rows(), cols)
	}
	return nil
}

// gmmDense returns v as a contiguous *tensor.Dense of dtype dt (zero dt: any dtype) and shape s.
func gmmDense(name, what string, v G.Value, dt tensor.Dtype, s tensor.Shape) (*tensor.Dense, error) {
	if err := gmmHostOnly(name, what, v); err != nil {
		return nil, err
	}
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("gomoe: %s: %s is %T, want *tensor.Dense", name, what, v)
	}
	if dt.Type != nil && d.Dtype() != dt {
		return nil, fmt.Errorf("gomoe: %s: %s has dtype %v, want %v", name, what, d.Dtype(), dt)
	}
	if s != nil && !d.Shape().Eq(s) {
		return nil, fmt.Errorf("gomoe: %s: %s has shape %v, want %v", name, what, d.Shape(), s)
	}
	if d.RequiresIterator() {
		d = d.Materialize().(*tensor.Dense)
	}
	return d, nil
}

// gmmHostOnly returns an error for a value in device memory reaching a host-only path (an op
// without a device kernel, such as RowLogSumExp or ExpertLoad, or the lisp machine's DoDiff),
// where reading it from the host would fault.
func gmmHostOnly(name, what string, v G.Value) error {
	if device.Of(v) != nil {
		return fmt.Errorf("gomoe: %s: %s is in GPU memory, but %s has no CUDA kernel yet; run it on host values", name, what, name)
	}
	return nil
}

// gmmDoInputs checks and reads the inputs (rows [R, C], w [E,H,N], plan) of the forward and
// of the backward to the rows, in that order: w first (a float tensor of E matrices H×N), then
// the rows, named what, whose width C is w's dimension colDim (1: H, 2: N), then the plan.
func gmmDoInputs(name string, geo kernels.Geometry, vs []G.Value, what string, colDim int) (rows, w *tensor.Dense, p kernels.Plan, H, N int, err error) {
	if len(vs) != 3 {
		return nil, nil, p, 0, 0, fmt.Errorf("gomoe: %s: want 3 inputs, got %d", name, len(vs))
	}
	if w, err = gmmDense(name, "w", vs[1], tensor.Dtype{}, nil); err != nil {
		return nil, nil, p, 0, 0, err
	}
	if err = gmmFloat(w.Dtype()); err != nil {
		return nil, nil, p, 0, 0, err
	}
	if w.Dims() != 3 || w.Shape()[0] != geo.E {
		return nil, nil, p, 0, 0, fmt.Errorf("gomoe: %s: w has shape %v, want (E=%d, H, N)", name, w.Shape(), geo.E)
	}
	H, N = w.Shape()[1], w.Shape()[2]
	if rows, err = gmmDense(name, what, vs[0], w.Dtype(), tensor.Shape{geo.Rows(), w.Shape()[colDim]}); err != nil {
		return nil, nil, p, 0, 0, err
	}
	if p, err = gmmPlan(name, geo, vs[2]); err != nil {
		return nil, nil, kernels.Plan{}, 0, 0, err
	}
	return rows, w, p, H, N, nil
}

// gmmPlan reads the plan value as a kernels.Plan of geometry geo.
func gmmPlan(name string, geo kernels.Geometry, v G.Value) (kernels.Plan, error) {
	d, err := gmmDense(name, "plan", v, tensor.Int32, tensor.Shape{geo.PlanLen()})
	if err != nil {
		return kernels.Plan{}, err
	}
	return geo.View(d.Int32s())
}

// ---------------------------------------------------------------------------------------------
// forward

type gmmOp struct {
	opkit.Base
	geo kernels.Geometry
}

func (op gmmOp) Arity() int { return 3 }

// Type: Matrix a → Tensor-3 a → Vector int32 → Matrix a.
func (op gmmOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 3, Of: a}, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: a})
}

func (op gmmOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	H, N, err := gmmShapes("GroupedMatMul", op.geo, ds, 0, 1, 2)
	if err != nil {
		return nil, err
	}
	if err := gmmRowsShape("GroupedMatMul", op.geo, ds[0], H); err != nil {
		return nil, err
	}
	return tensor.Shape{op.geo.Rows(), N}, nil
}

func (op gmmOp) Do(vs ...G.Value) (G.Value, error) {
	if out, done, err := gmmDispatch("GroupedMatMul", vs, func(dev device.Backend) (G.Value, error) {
		return dev.GroupedMatMul(op.geo, vs[0], vs[1], vs[2])
	}, op.Do); done {
		return out, err
	}
	xp, w, p, H, N, err := gmmDoInputs("GroupedMatMul", op.geo, vs, "xp", 1)
	if err != nil {
		return nil, err
	}
	if err := opkit.CheckAlloc("GroupedMatMul", int(w.Dtype().Size()), op.geo.Rows(), N); err != nil {
		return nil, err
	}
	z := tensor.New(tensor.Of(w.Dtype()), tensor.WithShape(op.geo.Rows(), N))
	switch w.Dtype() {
	case tensor.Float32:
		err = kernels.GroupedMatMulForward(z.Float32s(), xp.Float32s(), w.Float32s(), p, H, N)
	default:
		err = kernels.GroupedMatMulForward(z.Float64s(), xp.Float64s(), w.Float64s(), p, H, N)
	}
	if err != nil {
		return nil, err
	}
	return z, nil
}

func (op gmmOp) String() string        { return "op.GroupedMatMul{" + opkit.GeometryKey(op.geo) + "}" }
func (op gmmOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op gmmOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// DiffWRT: xp and w are differentiable, the plan is not.
func (op gmmOp) DiffWRT(int) []bool { return []bool{true, true, false} }

// SymDiff: dxp = dz · w[e]ᵀ per segment; dw[e] = xp[seg]ᵀ · dz[seg].
func (op gmmOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 3 {
		return nil, fmt.Errorf("gomoe: GroupedMatMul: want 3 inputs, got %d", len(inputs))
	}
	xp, w, plan := inputs[0], inputs[1], inputs[2]
	dxp, err := G.ApplyOp(gmmRowsGradOp{geo: op.geo}, grad, w, plan)
	if err != nil {
		return nil, err
	}
	dw, err := G.ApplyOp(gmmWeightsGradOp{geo: op.geo, h: w.Shape()[1]}, xp, grad, plan)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dxp, dw, nil}, nil
}

// DoDiff accumulates dz · w[e]ᵀ into xp's gradient and xp[seg]ᵀ · dz[seg] into w's.
func (op gmmOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "GroupedMatMul.DoDiff"
	if len(inputs) != 3 {
		return fmt.Errorf("gomoe: %s: want 3 inputs, got %d", name, len(inputs))
	}
	gz, err := output.Grad()
	if err != nil {
		return err
	}
	gxv, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gwv, err := inputs[1].Grad()
	if err != nil {
		return err
	}
	w, err := gmmDense(name, "w", inputs[1].Value(), tensor.Dtype{}, nil)
	if err != nil {
		return err
	}
	if w.Dims() != 3 {
		return fmt.Errorf("gomoe: %s: w has shape %v, want 3 dims", name, w.Shape())
	}
	H, N := w.Shape()[1], w.Shape()[2]
	R := op.geo.Rows()
	xp, err := gmmDense(name, "xp", inputs[0].Value(), w.Dtype(), tensor.Shape{R, H})
	if err != nil {
		return err
	}
	dz, err := gmmDense(name, "output grad", gz, w.Dtype(), tensor.Shape{R, N})
	if err != nil {
		return err
	}
	gx, ok1 := gxv.(*tensor.Dense)
	gw, ok2 := gwv.(*tensor.Dense)
	if !ok1 || !ok2 || gx.RequiresIterator() || gw.RequiresIterator() || !gx.Shape().Eq(xp.Shape()) || !gw.Shape().Eq(w.Shape()) || gx.Dtype() != w.Dtype() || gw.Dtype() != w.Dtype() {
		return fmt.Errorf("gomoe: %s: input gradients are %T, %T; want contiguous dense tensors shaped like the inputs", name, gxv, gwv)
	}
	p, err := gmmPlan(name, op.geo, inputs[2].Value())
	if err != nil {
		return err
	}
	switch w.Dtype() {
	case tensor.Float32:
		if err = kernels.GroupedMatMulBackwardRows(gx.Float32s(), dz.Float32s(), w.Float32s(), p, H, N, true); err == nil {
			err = kernels.GroupedMatMulBackwardWeights(gw.Float32s(), xp.Float32s(), dz.Float32s(), p, H, N, true)
		}
	case tensor.Float64:
		if err = kernels.GroupedMatMulBackwardRows(gx.Float64s(), dz.Float64s(), w.Float64s(), p, H, N, true); err == nil {
			err = kernels.GroupedMatMulBackwardWeights(gw.Float64s(), xp.Float64s(), dz.Float64s(), p, H, N, true)
		}
	default:
		err = gmmFloat(w.Dtype())
	}
	return err
}

// ---------------------------------------------------------------------------------------------
// backward to the rows: (dz [R,N], w [E,H,N], plan) → dxp [R,H]

type gmmRowsGradOp struct {
	opkit.Base
	geo kernels.Geometry
}

func (op gmmRowsGradOp) Arity() int { return 3 }
func (op gmmRowsGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 3, Of: a}, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 2, Of: a})
}

func (op gmmRowsGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	H, N, err := gmmShapes("GroupedMatMulRowsGrad", op.geo, ds, 0, 1, 2)
	if err != nil {
		return nil, err
	}
	if err := gmmRowsShape("GroupedMatMulRowsGrad", op.geo, ds[0], N); err != nil {
		return nil, err
	}
	return tensor.Shape{op.geo.Rows(), H}, nil
}

func (op gmmRowsGradOp) Do(vs ...G.Value) (G.Value, error) {
	if out, done, err := gmmDispatch("GroupedMatMulRowsGrad", vs, func(dev device.Backend) (G.Value, error) {
		return dev.GroupedMatMulRowsGrad(op.geo, vs[0], vs[1], vs[2])
	}, op.Do); done {
		return out, err
	}
	dz, w, p, H, N, err := gmmDoInputs("GroupedMatMulRowsGrad", op.geo, vs, "dz", 2)
	if err != nil {
		return nil, err
	}
	if err := opkit.CheckAlloc("GroupedMatMulRowsGrad", int(w.Dtype().Size()), op.geo.Rows(), H); err != nil {
		return nil, err
	}
	dxp := tensor.New(tensor.Of(w.Dtype()), tensor.WithShape(op.geo.Rows(), H))
	switch w.Dtype() {
	case tensor.Float32:
		err = kernels.GroupedMatMulBackwardRows(dxp.Float32s(), dz.Float32s(), w.Float32s(), p, H, N, false)
	default:
		err = kernels.GroupedMatMulBackwardRows(dxp.Float64s(), dz.Float64s(), w.Float64s(), p, H, N, false)
	}
	if err != nil {
		return nil, err
	}
	return dxp, nil
}

func (op gmmRowsGradOp) String() string {
	return "op.GroupedMatMulRowsGrad{" + opkit.GeometryKey(op.geo) + "}"
}
func (op gmmRowsGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op gmmRowsGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

// ---------------------------------------------------------------------------------------------
// backward to the weights: (xp [R,H], dz [R,N], plan) → dw [E,H,N]

type gmmWeightsGradOp struct {
	opkit.Base
	geo kernels.Geometry
	h   int // H: the weight's rows (xp's columns), kept for the hash and shape
}

func (op gmmWeightsGradOp) Arity() int { return 3 }
func (op gmmWeightsGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: tensor.Int32}, G.TensorType{Dims: 3, Of: a})
}

func (op gmmWeightsGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "GroupedMatMulWeightsGrad"
	if _, _, err := gmmShapes(name, op.geo, ds, 0, -1, 2); err != nil {
		return nil, err
	}
	if err := gmmRowsShape(name, op.geo, ds[0], op.h); err != nil {
		return nil, err
	}
	ds1, ok := ds[1].(tensor.Shape)
	if !ok || ds1.Dims() != 2 || ds1[0] != op.geo.Rows() {
		return nil, fmt.Errorf("gomoe: %s: dz has shape %v, want (R=%d, N)", name, ds[1], op.geo.Rows())
	}
	return tensor.Shape{op.geo.E, op.h, ds1[1]}, nil
}

func (op gmmWeightsGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "GroupedMatMulWeightsGrad"
	if out, done, err := gmmDispatch(name, vs, func(dev device.Backend) (G.Value, error) {
		return dev.GroupedMatMulWeightsGrad(op.geo, vs[0], vs[1], vs[2], op.h)
	}, op.Do); done {
		return out, err
	}
	xp, err := gmmDense(name, "xp", vs[0], tensor.Dtype{}, tensor.Shape{op.geo.Rows(), op.h})
	if err != nil {
		return nil, err
	}
	if err := gmmFloat(xp.Dtype()); err != nil {
		return nil, err
	}
	dzd, ok := vs[1].(*tensor.Dense)
	if !ok || dzd.Dims() != 2 {
		return nil, fmt.Errorf("gomoe: %s: dz is %T, want a matrix", name, vs[1])
	}
	N := dzd.Shape()[1]
	dz, err := gmmDense(name, "dz", vs[1], xp.Dtype(), tensor.Shape{op.geo.Rows(), N})
	if err != nil {
		return nil, err
	}
	p, err := gmmPlan(name, op.geo, vs[2])
	if err != nil {
		return nil, err
	}
	H := op.h
	dw := tensor.New(tensor.Of(xp.Dtype()), tensor.WithShape(op.geo.E, H, N))
	switch xp.Dtype() {
	case tensor.Float32:
		err = kernels.GroupedMatMulBackwardWeights(dw.Float32s(), xp.Float32s(), dz.Float32s(), p, H, N, false)
	default:
		err = kernels.GroupedMatMulBackwardWeights(dw.Float64s(), xp.Float64s(), dz.Float64s(), p, H, N, false)
	}
	if err != nil {
		return nil, err
	}
	return dw, nil
}

func (op gmmWeightsGradOp) String() string {
	return fmt.Sprintf("op.GroupedMatMulWeightsGrad{%s H=%d}", opkit.GeometryKey(op.geo), op.h)
}
func (op gmmWeightsGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op gmmWeightsGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }

var (
	_ G.SDOp = gmmOp{}
	_ G.ADOp = gmmOp{}
)
