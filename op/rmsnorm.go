package op

import (
	"fmt"
	"hash"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// RMSNorm scales every row of the matrix x [N,D] to unit root-mean-square and then by the
// learnable gain [D]: y = x · r · gain with r = 1/sqrt(mean(x_row²) + eps), eps ≥ 0. It runs on
// the device when x and gain live there.
//
// Gradients, row by row: dx = r·gain·dy − x·r³·(Σ gain·dy·x)/D; dgain = Σ_rows dy·x·r. CPU
// kernels: kernels.RMSNorm, RMSNormBackward and RMSNormGainGrad; on the device their CUDA twins.
func RMSNorm(x, gain *G.Node, eps float64) (*G.Node, error) {
	const name = "RMSNorm"
	if err := checkNodes(name, []*G.Node{x, gain}, "x", "gain"); err != nil {
		return nil, err
	}
	if err := wantFloat(x.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "x: %v", err)
	}
	if gain.Dtype() != x.Dtype() {
		return nil, opkit.Errorf(name, "gain has dtype %v, x %v", gain.Dtype(), x.Dtype())
	}
	if math.IsNaN(eps) || math.IsInf(eps, 0) || eps < 0 {
		return nil, opkit.Errorf(name, "eps %g, want a finite value >= 0", eps)
	}
	if err := checkShape(name, "x", x.Shape(), dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "gain", gain.Shape(), dim{"D", x.Shape()[1]}); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, rmsOp{eps: eps}, x, gain)
}

// rmsOp: x [N,D], gain [D] → y [N,D].
type rmsOp struct {
	opkit.Base
	eps float64
}

func (op rmsOp) Arity() int { return 2 }

func (op rmsOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a}, G.TensorType{Dims: 2, Of: a})
}

// rmsShapes checks x [N,D], gain [D] and (grad ops) dy [N,D].
func rmsShapes(name string, s []tensor.Shape) error {
	if err := checkShape(name, "x", s[0], dim{"N", -1}, dim{"D", -1}); err != nil {
		return err
	}
	if err := checkShape(name, "gain", s[1], dim{"D", s[0][1]}); err != nil {
		return err
	}
	if len(s) > 2 {
		return checkShape(name, "dy", s[2], dim{"N", s[0][0]}, dim{"D", s[0][1]})
	}
	return nil
}

func (op rmsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf("RMSNorm", ds, "x", "gain")
	if err != nil {
		return nil, err
	}
	if err := rmsShapes("RMSNorm", s); err != nil {
		return nil, err
	}
	return s[0].Clone(), nil
}

// rmsValues checks the values of RMSNorm (x, gain) or its gradient (x, gain, dy) and returns
// their device backend (nil on the host).
func rmsValues(name string, vs []G.Value, n int) (device.Backend, error) {
	if err := opkit.CheckArity(name, vs, n); err != nil {
		return nil, err
	}
	if err := checkValue(name, "x", vs[0], tensor.Dtype{}, dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	N, D := vs[0].Shape()[0], vs[0].Shape()[1]
	if err := checkValue(name, "gain", vs[1], vs[0].Dtype(), dim{"D", D}); err != nil {
		return nil, err
	}
	if n > 2 {
		if err := checkValue(name, "dy", vs[2], vs[0].Dtype(), dim{"N", N}, dim{"D", D}); err != nil {
			return nil, err
		}
	}
	return onDevice(name, vs...)
}

func (op rmsOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "RMSNorm"
	dev, err := rmsValues(name, vs, 2)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.RMSNorm(vs[0], vs[1], op.eps)
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		return rmsHost[float32](name, vs, op.eps, -1)
	}
	return rmsHost[float64](name, vs, op.eps, -1)
}

// rmsHost runs the forward (which < 0) or the gradient of input which on the host.
func rmsHost[F float32 | float64](name string, vs []G.Value, eps float64, which int) (G.Value, error) {
	s := make([][]F, len(vs))
	for i, v := range vs {
		d, err := hostFloats[F](name, [...]string{"x", "gain", "dy"}[i], v)
		if err != nil {
			return nil, err
		}
		s[i] = d
	}
	switch which {
	case 0:
		out, o := newDense[F](vs[0].Shape().Clone()...)
		return out, opkit.Wrap(name, kernels.RMSNormBackward(o, s[0], s[1], s[2], eps))
	case 1:
		out, o := newDense[F](vs[1].Shape().Clone()...)
		return out, opkit.Wrap(name, kernels.RMSNormGainGrad(o, s[0], s[2], eps))
	}
	out, o := newDense[F](vs[0].Shape().Clone()...)
	return out, opkit.Wrap(name, kernels.RMSNorm(o, s[0], s[1], eps))
}

func (op rmsOp) String() string        { return fmt.Sprintf("op.RMSNorm{eps=%v}", op.eps) }
func (op rmsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op rmsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op rmsOp) DiffWRT(int) []bool { return []bool{true, true} }

// SymDiff: one rmsGradOp per input, each a function of x, gain and dy.
func (op rmsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("RMSNorm", "want 2 inputs, got %d", len(inputs))
	}
	out := make(G.Nodes, 2)
	for i := range out {
		d, err := G.ApplyOp(rmsGradOp{eps: op.eps, which: i}, inputs[0], inputs[1], grad)
		if err != nil {
			return nil, err
		}
		out[i] = d
	}
	return out, nil
}

// DoDiff accumulates the gradients of x and gain.
func (op rmsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "RMSNorm.DoDiff"
	if len(inputs) != 2 {
		return opkit.Errorf(name, "want 2 inputs, got %d", len(inputs))
	}
	dy, err := output.Grad()
	if err != nil {
		return err
	}
	ups := make([]gradUpdate, 2)
	for i, n := range inputs {
		d, err := rmsGradOp{eps: op.eps, which: i}.Do(inputs[0].Value(), inputs[1].Value(), dy)
		if err != nil {
			return err
		}
		g, err := n.Grad()
		if err != nil {
			return err
		}
		ups[i] = gradUpdate{[...]string{"x", "gain"}[i], g, d}
	}
	return accumulate(name, ups...)
}

// rmsGradOp: x, gain, dy → the gradient of input which (0: x, 1: gain).
type rmsGradOp struct {
	opkit.Base
	eps   float64
	which int
}

func (op rmsGradOp) Arity() int { return 3 }

func (op rmsGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	m, v := G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 1, Of: a}
	if op.which == 1 {
		return hm.NewFnType(m, v, m, v)
	}
	return hm.NewFnType(m, v, m, m)
}

func (op rmsGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	s, err := shapesOf(op.String(), ds, "x", "gain", "dy")
	if err != nil {
		return nil, err
	}
	if err := rmsShapes(op.String(), s); err != nil {
		return nil, err
	}
	if op.which == 1 {
		return s[1].Clone(), nil
	}
	return s[0].Clone(), nil
}

func (op rmsGradOp) Do(vs ...G.Value) (G.Value, error) {
	name := op.String()
	dev, err := rmsValues(name, vs, 3)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.RMSNormGrad(vs[0], vs[1], vs[2], op.eps, op.which)
		return v, opkit.Wrap(name, err)
	}
	if vs[0].Dtype() == tensor.Float32 {
		return rmsHost[float32](name, vs, op.eps, op.which)
	}
	return rmsHost[float64](name, vs, op.eps, op.which)
}

func (op rmsGradOp) String() string {
	return fmt.Sprintf("op.RMSNormGrad{eps=%v input=%d}", op.eps, op.which)
}
func (op rmsGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op rmsGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }
