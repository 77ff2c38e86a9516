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

// The element-wise activations (SwiGLU, GELU, Sigmoid: swiglu.go, gelu.go, sigmoid.go) and the
// row-wise ops (Softmax, RowNormalize: softmax.go, row_normalize.go) share one Gorgonia op,
// pwOp, and one gradient op, pwGradOp, parameterised by a pwKind. Their math is
// kernels.ActivationForward/Backward and kernels.RowForward/Backward on the CPU and the CUDA
// twins of those on the device.

// pwKind names one of the pointwise ops.
type pwKind int

const (
	pwSwiGLU pwKind = iota + 1
	pwGELU
	pwSigmoid
	pwSoftmax
	pwRowNormalize
)

func (k pwKind) String() string {
	switch k {
	case pwSwiGLU:
		return "SwiGLU"
	case pwGELU:
		return "GELU"
	case pwSigmoid:
		return "Sigmoid"
	case pwSoftmax:
		return "Softmax"
	case pwRowNormalize:
		return "RowNormalize"
	}
	return fmt.Sprintf("pwKind(%d)", int(k))
}

// arity is the number of inputs.
func (k pwKind) arity() int {
	if k == pwSwiGLU {
		return 2
	}
	return 1
}

// row reports whether the op works on the rows of a matrix.
func (k pwKind) row() bool { return k == pwSoftmax || k == pwRowNormalize }

// activation and rowOp map the kind to the kernels' enums.
func (k pwKind) activation() kernels.Activation {
	switch k {
	case pwSwiGLU:
		return kernels.SwiGLU
	case pwGELU:
		return kernels.GELU
	}
	return kernels.Sigmoid
}

func (k pwKind) rowOp() kernels.RowOp {
	if k == pwSoftmax {
		return kernels.RowSoftmax
	}
	return kernels.RowNormalize
}

// desc describes the kind to a device backend.
func (k pwKind) desc() device.Pointwise {
	return device.Pointwise{Name: k.String(), Arity: k.arity(), Row: k.row(), Activation: k.activation(), RowOp: k.rowOp()}
}

// applyPointwise checks the inputs of op k and adds its node.
func applyPointwise(k pwKind, in ...*G.Node) (*G.Node, error) {
	name := k.String()
	if len(in) != k.arity() {
		return nil, opkit.Errorf(name, "want %d inputs, got %d", k.arity(), len(in))
	}
	for i, n := range in {
		if n == nil {
			return nil, opkit.Errorf(name, "input %d is nil", i)
		}
		if n.IsScalar() {
			// Gorgonia's type inference would refuse it in words of its own.
			return nil, opkit.Errorf(name, "input %d is a scalar, want a tensor of at least one dimension (reshape it to (1))", i)
		}
		if k.row() && !isFloat(n.Dtype()) {
			return nil, opkit.Errorf(name, "input %d: dtype %v, want float32 or float64", i, n.Dtype())
		}
		if !isData(n.Dtype()) {
			return nil, opkit.Errorf(name, "input %d: dtype %v, want float32, float64 or bfloat16", i, n.Dtype())
		}
		if i > 0 {
			if n.Dtype() != in[0].Dtype() {
				return nil, opkit.Errorf(name, "inputs have dtypes %v and %v", in[0].Dtype(), n.Dtype())
			}
			if !n.Shape().Eq(in[0].Shape()) {
				return nil, opkit.Errorf(name, "inputs have shapes %v and %v", in[0].Shape(), n.Shape())
			}
		}
	}
	if len(in) > 1 {
		if err := checkNodes(name, in, "a", "b"); err != nil {
			return nil, err
		}
	}
	if k.row() && in[0].Dims() != 2 {
		return nil, opkit.Errorf(name, "x has shape %v, want a matrix (rows, cols)", in[0].Shape())
	}
	if in[0].Shape().TotalSize() == 0 {
		return nil, opkit.Errorf(name, "x is empty")
	}
	return opkit.ApplyOp(name, pwOp{k: k, dims: in[0].Dims()}, in...)
}

// pwOp: k's inputs (one or two tensors of one shape) → output of that shape.
type pwOp struct {
	opkit.Base
	k    pwKind
	dims int
}

func (op pwOp) Arity() int { return op.k.arity() }

func (op pwOp) Type() hm.Type { return op.typeN(op.Arity()) }

// sameShapes returns the shape all of ds share, or an error.
func sameShapes(name string, dims int, ds []G.DimSizer) (tensor.Shape, error) {
	var s0 tensor.Shape
	for i, d := range ds {
		s, err := shapeOf(name, fmt.Sprintf("input %d", i), d)
		if err != nil {
			return nil, err
		}
		if s.Dims() != dims {
			return nil, opkit.Errorf(name, "input %d has shape %v, want %d dimensions", i, s, dims)
		}
		if i == 0 {
			s0 = s
		} else if !s.Eq(s0) {
			return nil, opkit.Errorf(name, "inputs have shapes %v and %v", s0, s)
		}
	}
	return s0.Clone(), nil
}

func (op pwOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != op.Arity() {
		return nil, opkit.Errorf(op.k.String(), "want %d inputs, got %d", op.Arity(), len(ds))
	}
	return sameShapes(op.k.String(), op.dims, ds)
}

// pwValues checks the values of an element-wise op: n values of one float dtype (float32 or
// float64) and shape.
func pwValues(name string, dims int, vs []G.Value, n int) error {
	return pwKindValues(pwSoftmax, name, dims, vs, n)
}

// pwKindValues checks the values of pointwise op k: n values of one float dtype (bfloat16 too
// for the activations) and shape.
func pwKindValues(k pwKind, name string, dims int, vs []G.Value, n int) error {
	if err := opkit.CheckArity(name, vs, n); err != nil {
		return err
	}
	for i, v := range vs {
		if k.row() || v.Dtype() != bfloat16.Dtype {
			if err := checkFloat(name, fmt.Sprintf("input %d", i), v.Dtype()); err != nil {
				return err
			}
		}
		if v.Dtype() != vs[0].Dtype() || !v.Shape().Eq(vs[0].Shape()) {
			return opkit.Errorf(name, "input %d is %v %v, input 0 is %v %v", i, v.Dtype(), v.Shape(), vs[0].Dtype(), vs[0].Shape())
		}
	}
	if s := vs[0].Shape(); s.Dims() != dims && !(dims == 0 && s.IsScalar()) {
		return opkit.Errorf(name, "inputs have shape %v, want %d dimensions", s, dims)
	}
	return nil
}

func (op pwOp) Do(vs ...G.Value) (G.Value, error) {
	name := op.k.String()
	if err := pwKindValues(op.k, name, op.dims, vs, op.Arity()); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.Pointwise(op.k.desc(), vs...)
		return v, opkit.Wrap(name, err)
	}
	switch vs[0].Dtype() {
	case bfloat16.Dtype:
		return viaFloat32(name, vs, func(ws []G.Value) (G.Value, error) { return pwForward[float32](op.k, ws) })
	case tensor.Float32:
		return pwForward[float32](op.k, vs)
	case tensor.Float64:
		return pwForward[float64](op.k, vs)
	}
	return nil, opkit.Errorf(name, "dtype %v, want float32 or float64", vs[0].Dtype())
}

func pwForward[F float32 | float64](k pwKind, vs []G.Value) (G.Value, error) {
	name := k.String()
	ins := make([][]F, len(vs))
	for i, v := range vs {
		s, err := hostFloats[F](name, fmt.Sprintf("input %d", i), v)
		if err != nil {
			return nil, err
		}
		ins[i] = s
	}
	out, o := newDense[F](vs[0].Shape().Clone()...)
	var err error
	if k.row() {
		err = kernels.RowForward(k.rowOp(), o, ins[0], vs[0].Shape()[1])
	} else {
		b := ins[0]
		if len(ins) > 1 {
			b = ins[1]
		}
		err = kernels.ActivationForward(k.activation(), o, ins[0], b)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// viaFloat32 runs the float32 CPU kernel f on bfloat16 values widened exactly to float32 and
// rounds its result once to bfloat16, as the CUDA kernels compute bfloat16 in float32.
func viaFloat32(name string, vs []G.Value, f func([]G.Value) (G.Value, error)) (G.Value, error) {
	ws := make([]G.Value, len(vs))
	for i, v := range vs {
		w, err := widenBF16(name, fmt.Sprintf("input %d", i), v)
		if err != nil {
			return nil, err
		}
		ws[i] = w
	}
	out, err := f(ws)
	if err != nil {
		return nil, err
	}
	return roundBF16(name, out, nil)
}

func (op pwOp) String() string        { return fmt.Sprintf("op.%v{dims=%d}", op.k, op.dims) }
func (op pwOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op pwOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op pwOp) DiffWRT(n int) []bool {
	w := make([]bool, n)
	for i := range w {
		w[i] = true
	}
	return w
}

// SymDiff: one pwGradOp per input, each a function of the inputs, the output and its gradient.
func (op pwOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.Arity() {
		return nil, opkit.Errorf(op.k.String(), "want %d inputs, got %d", op.Arity(), len(inputs))
	}
	args := append(append(G.Nodes{}, inputs...), output, grad)
	out := make(G.Nodes, len(inputs))
	for i := range inputs {
		d, err := G.ApplyOp(pwGradOp{k: op.k, dims: op.dims, which: i}, args...)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// DoDiff accumulates every input's gradient (computed as SymDiff's ops do) into the input's
// gradient value.
func (op pwOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	name := op.k.String() + ".DoDiff"
	if len(inputs) != op.Arity() {
		return opkit.Errorf(name, "want %d inputs, got %d", op.Arity(), len(inputs))
	}
	gy, err := output.Grad()
	if err != nil {
		return err
	}
	vs := make([]G.Value, 0, len(inputs)+2)
	for _, n := range inputs {
		vs = append(vs, n.Value())
	}
	vs = append(vs, output.Value(), gy)
	ups := make([]gradUpdate, len(inputs))
	for i, n := range inputs {
		d, err := pwGradOp{k: op.k, dims: op.dims, which: i}.Do(vs...)
		if err != nil {
			return err
		}
		g, err := n.Grad()
		if err != nil {
			return err
		}
		ups[i] = gradUpdate{fmt.Sprintf("input %d", i), g, d}
	}
	return accumulate(name, ups...)
}

// pwGradOp: (inputs..., y, dy) → the gradient of input `which`.
type pwGradOp struct {
	opkit.Base
	k     pwKind
	dims  int
	which int
}

func (op pwGradOp) Arity() int { return op.k.arity() + 2 }

func (op pwGradOp) Type() hm.Type { return pwOp{k: op.k, dims: op.dims}.typeN(op.Arity()) }

func (op pwOp) typeN(n int) hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: op.dims, Of: a}
	ts := make([]hm.Type, n+1)
	for i := range ts {
		ts[i] = t
	}
	return hm.NewFnType(ts...)
}

func (op pwGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != op.Arity() {
		return nil, opkit.Errorf(op.String(), "want %d inputs, got %d", op.Arity(), len(ds))
	}
	return sameShapes(op.String(), op.dims, ds)
}

func (op pwGradOp) Do(vs ...G.Value) (G.Value, error) {
	name := op.String()
	if err := pwKindValues(op.k, name, op.dims, vs, op.Arity()); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	n := op.k.arity()
	if dev != nil {
		want := make([]bool, n)
		want[op.which] = true
		gs, err := dev.PointwiseGrad(op.k.desc(), vs[:n], vs[n], vs[n+1], want)
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return gs[op.which], nil
	}
	switch vs[0].Dtype() {
	case bfloat16.Dtype:
		return viaFloat32(name, vs, func(ws []G.Value) (G.Value, error) { return pwBackward[float32](op, ws) })
	case tensor.Float32:
		return pwBackward[float32](op, vs)
	case tensor.Float64:
		return pwBackward[float64](op, vs)
	}
	return nil, opkit.Errorf(name, "dtype %v, want float32 or float64", vs[0].Dtype())
}

func pwBackward[F float32 | float64](op pwGradOp, vs []G.Value) (G.Value, error) {
	name := op.String()
	s := make([][]F, len(vs))
	for i, v := range vs {
		d, err := hostFloats[F](name, fmt.Sprintf("input %d", i), v)
		if err != nil {
			return nil, err
		}
		s[i] = d
	}
	n := op.k.arity()
	a, y, dy := s[0], s[n], s[n+1]
	b := a
	if n > 1 {
		b = s[1]
	}
	out, o := newDense[F](vs[0].Shape().Clone()...)
	var err error
	if op.k.row() {
		err = kernels.RowBackward(op.k.rowOp(), o, a, y, dy, vs[0].Shape()[1])
	} else {
		err = kernels.ActivationBackward(op.k.activation(), op.which, o, a, b, y, dy)
	}
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op pwGradOp) String() string {
	return fmt.Sprintf("op.%vGrad{dims=%d input=%d}", op.k, op.dims, op.which)
}
func (op pwGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op pwGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }
