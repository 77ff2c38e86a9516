package op

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// CrossEntropy returns the mean softmax cross-entropy of logits [N,C] against target [N,C]
// (one-hot rows, or rows of class probabilities that sum to 1) as a scalar node:
//
//	(1/N)·Σ_r (logsumexp(logits[r]) − ⟨logits[r], target[r]⟩)
//
// The row log-sum-exp subtracts the row maximum, so large logits neither overflow nor
// underflow. On the device the loss is a 0-d device tensor (read it with train.Scalar).
//
// Gradient wrt logits: (dy/N)·(softmax(logits[r]) − target[r]); target gets none. G.Grad seeds
// the cost with a host scalar constant (1) even when everything else lives on the device, so
// the gradient op accepts a host scalar dy together with device logits and target (the one
// mix of host and device values it allows): it reads dy on the host and folds it into the
// kernel's scale. A dy on the device (a cost built from the loss by device ops) is read by the
// kernel itself, without a copy to the host. CPU kernels: kernels.CrossEntropy and
// kernels.CrossEntropyBackward; on the device their CUDA twins.
func CrossEntropy(logits, target *G.Node) (*G.Node, error) {
	const name = "CrossEntropy"
	if err := checkNodes(name, []*G.Node{logits, target}, "logits", "target"); err != nil {
		return nil, err
	}
	if err := wantFloat(logits.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "logits: %v", err)
	}
	if target.Dtype() != logits.Dtype() {
		return nil, opkit.Errorf(name, "target has dtype %v, logits %v", target.Dtype(), logits.Dtype())
	}
	if err := checkShape(name, "logits", logits.Shape(), dim{"N", -1}, dim{"C", -1}); err != nil {
		return nil, err
	}
	s := logits.Shape()
	if err := checkShape(name, "target", target.Shape(), dim{"N", s[0]}, dim{"C", s[1]}); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, ceOp{}, logits, target)
}

// ceOp: logits [N,C], target [N,C] → the mean cross-entropy (a scalar).
type ceOp struct{ opkit.Base }

func (op ceOp) Arity() int { return 2 }

func (op ceOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	m := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(m, m, a)
}

// ceShapes checks logits [N,C] and target [N,C].
func ceShapes(name string, s []tensor.Shape) error {
	if err := checkShape(name, "logits", s[0], dim{"N", -1}, dim{"C", -1}); err != nil {
		return err
	}
	return checkShape(name, "target", s[1], dim{"N", s[0][0]}, dim{"C", s[0][1]})
}

func (op ceOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("CrossEntropy", ds, "logits", "target")
	if err != nil {
		return nil, err
	}
	if err := ceShapes("CrossEntropy", s); err != nil {
		return nil, err
	}
	return tensor.ScalarShape(), nil
}

// ceValues checks logits and target values and returns their device backend (nil on the host).
func ceValues(name string, logits, target G.Value) (device.Backend, error) {
	if err := checkValue(name, "logits", logits, tensor.Dtype{}, dim{"N", -1}, dim{"C", -1}); err != nil {
		return nil, err
	}
	s := logits.Shape()
	if err := checkValue(name, "target", target, logits.Dtype(), dim{"N", s[0]}, dim{"C", s[1]}); err != nil {
		return nil, err
	}
	return onDevice(name, logits, target)
}

func (op ceOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "CrossEntropy"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	dev, err := ceValues(name, vs[0], vs[1])
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.CrossEntropy(vs[0], vs[1])
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		l, err := ceHost[float32](vs[0], vs[1])
		if err != nil {
			return nil, err
		}
		return G.NewF32(float32(l)), nil
	}
	l, err := ceHost[float64](vs[0], vs[1])
	if err != nil {
		return nil, err
	}
	return G.NewF64(l), nil
}

func ceHost[F float32 | float64](logits, target G.Value) (float64, error) {
	const name = "CrossEntropy"
	x, err := hostFloats[F](name, "logits", logits)
	if err != nil {
		return 0, err
	}
	t, err := hostFloats[F](name, "target", target)
	if err != nil {
		return 0, err
	}
	l, err := kernels.CrossEntropy(x, t, logits.Shape()[1])
	return l, opkit.Wrap(name, err)
}

func (op ceOp) String() string        { return "op.CrossEntropy{}" }
func (op ceOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op ceOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op ceOp) DiffWRT(int) []bool { return []bool{true, false} }

// SymDiff: dlogits = CrossEntropyGrad(logits, target, dy); target gets no gradient.
func (op ceOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("CrossEntropy", "want 2 inputs, got %d", len(inputs))
	}
	d, err := G.ApplyOp(ceGradOp{}, inputs[0], inputs[1], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff accumulates the gradient into the logits' gradient.
func (op ceOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("CrossEntropy.DoDiff", inputs, output, 2, 0, "logits", func(dy G.Value) (G.Value, error) {
		return ceGradOp{}.Do(inputs[0].Value(), inputs[1].Value(), dy)
	})
}

// ceGradOp: logits [N,C], target [N,C], dy (scalar) → dlogits [N,C].
type ceGradOp struct{ opkit.Base }

func (op ceGradOp) Arity() int { return 3 }

func (op ceGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	m := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(m, m, a, m)
}

func (op ceGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "CrossEntropyGrad"
	s, err := shapesOf(name, ds, "logits", "target", "dy")
	if err != nil {
		return nil, err
	}
	if err := ceShapes(name, s); err != nil {
		return nil, err
	}
	if s[2].TotalSize() != 1 {
		return nil, opkit.Errorf(name, "dy has shape %v, want a scalar", opkit.ShapeString(s[2]))
	}
	return s[0].Clone(), nil
}

// hostScalar returns the value of a host scalar of dtype dt: a *G.F32 or *G.F64, or a
// one-element host tensor.
func hostScalar(name string, v G.Value, dt tensor.Dtype) (float64, error) {
	if v == nil {
		return 0, opkit.Errorf(name, "dy is nil")
	}
	if v.Dtype() != dt {
		return 0, opkit.Errorf(name, "dy has dtype %v, want %v", v.Dtype(), dt)
	}
	if v.Shape().TotalSize() != 1 {
		return 0, opkit.Errorf(name, "dy has shape %v, want a scalar", opkit.ShapeString(v.Shape()))
	}
	return scalarOf(name, "dy", v)
}

func (op ceGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "CrossEntropyGrad"
	if err := opkit.CheckArity(name, vs, 3); err != nil {
		return nil, err
	}
	logits, target, dy := vs[0], vs[1], vs[2]
	dev, err := ceValues(name, logits, target)
	if err != nil {
		return nil, err
	}
	rows := float64(logits.Shape()[0])
	if device.Of(dy) != nil {
		if dev == nil {
			return nil, opkit.Errorf(name, "dy lives on the device but logits and target on the host")
		}
		if dy.Dtype() != logits.Dtype() || dy.Shape().TotalSize() != 1 {
			return nil, opkit.Errorf(name, "dy is %v %v, want a %v scalar", dy.Dtype(), opkit.ShapeString(dy.Shape()), logits.Dtype())
		}
		v, err := dev.CrossEntropyGrad(logits, target, dy, 1/rows)
		return v, opkit.Wrap(name, err)
	}
	g, err := hostScalar(name, dy, logits.Dtype())
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.CrossEntropyGrad(logits, target, nil, g/rows)
		return v, opkit.Wrap(name, err)
	}
	if logits.Dtype() == tensor.Float32 {
		return ceGradHost[float32](logits, target, g/rows)
	}
	return ceGradHost[float64](logits, target, g/rows)
}

func ceGradHost[F float32 | float64](logits, target G.Value, scale float64) (G.Value, error) {
	const name = "CrossEntropyGrad"
	x, err := hostFloats[F](name, "logits", logits)
	if err != nil {
		return nil, err
	}
	t, err := hostFloats[F](name, "target", target)
	if err != nil {
		return nil, err
	}
	out, o := newDense[F](logits.Shape().Clone()...)
	return out, opkit.Wrap(name, kernels.CrossEntropyBackward(o, x, t, logits.Shape()[1], scale))
}

func (op ceGradOp) String() string        { return "op.CrossEntropyGrad{}" }
func (op ceGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op ceGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }
