package op

import (
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// SwiGLUPacked returns h [R,F] = silu(a)·b for z [R,2F] that holds a = z[:, :F] and
// b = z[:, F:] side by side: the SwiGLU of a gate and an up projection computed as one matmul
// with the two weights packed as one [H,2F] matrix (Megatron's fc1, transformers'
// gate_up_proj). It is SwiGLU(a, b) without splitting z, and its gradient is one [R,2F]
// value, both halves written in one pass. z is float32, float64 or bfloat16 (computed in
// float32 and rounded once).
//
// CPU kernels: kernels.SwiGLUPackedForward/Backward (the same bits as SwiGLU on the halves);
// on the device their CUDA twins.
func SwiGLUPacked(z *G.Node) (*G.Node, error) {
	const name = "SwiGLUPacked"
	if err := checkNodes(name, []*G.Node{z}, "z"); err != nil {
		return nil, err
	}
	if err := checkData(name, "z", z.Dtype()); err != nil {
		return nil, err
	}
	if err := checkPackedShape(name, z.Shape()); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, swigluPackedOp{}, z)
}

// checkPackedShape checks that s is a matrix [R,2F] with R, F ≥ 1.
func checkPackedShape(name string, s tensor.Shape) error {
	if s.Dims() != 2 || s[0] < 1 || s[1] < 2 || s[1]%2 != 0 {
		return opkit.Errorf(name, "z has shape %v, want (R, 2F) with R, F ≥ 1", s)
	}
	return nil
}

// swigluPackedDesc is the op for a device backend.
var swigluPackedDesc = device.Pointwise{Name: "SwiGLUPacked", Arity: 1, Activation: kernels.SwiGLU, Packed: true}

// swigluPackedOp: z [R,2F] → h [R,F].
type swigluPackedOp struct{ opkit.Base }

func (op swigluPackedOp) Arity() int { return 1 }

func (op swigluPackedOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(G.TensorType{Dims: 2, Of: a}, G.TensorType{Dims: 2, Of: a})
}

func (op swigluPackedOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "SwiGLUPacked"
	if len(ds) != 1 {
		return nil, opkit.Errorf(name, "want 1 input, got %d", len(ds))
	}
	s, err := shapeOf(name, "z", ds[0])
	if err != nil {
		return nil, err
	}
	if err := checkPackedShape(name, s); err != nil {
		return nil, err
	}
	return tensor.Shape{s[0], s[1] / 2}, nil
}

// packedValue checks a z value: float32, float64 or bfloat16, shape [R,2F].
func packedValue(name string, z G.Value) error {
	if z == nil {
		return opkit.Errorf(name, "z is nil")
	}
	if err := checkData(name, "z", z.Dtype()); err != nil {
		return err
	}
	return checkPackedShape(name, z.Shape())
}

func (op swigluPackedOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "SwiGLUPacked"
	if err := opkit.CheckArity(name, vs, 1); err != nil {
		return nil, err
	}
	if err := packedValue(name, vs[0]); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.Pointwise(swigluPackedDesc, vs[0])
		return v, opkit.Wrap(name, err)
	}
	switch vs[0].Dtype() {
	case bfloat16.Dtype:
		return viaFloat32(name, vs, func(ws []G.Value) (G.Value, error) { return packedForward[float32](ws[0]) })
	case tensor.Float32:
		return packedForward[float32](vs[0])
	}
	return packedForward[float64](vs[0])
}

func packedForward[F float32 | float64](zv G.Value) (G.Value, error) {
	const name = "SwiGLUPacked"
	z, err := hostFloats[F](name, "z", zv)
	if err != nil {
		return nil, err
	}
	s := zv.Shape()
	out, h := newDense[F](s[0], s[1]/2)
	if err := kernels.SwiGLUPackedForward(h, z, s[1]/2); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op swigluPackedOp) String() string        { return "op.SwiGLUPacked{}" }
func (op swigluPackedOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op swigluPackedOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op swigluPackedOp) DiffWRT(int) []bool { return []bool{true} }

// SymDiff: dz = swigluPackedGradOp(z, dy).
func (op swigluPackedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 1 {
		return nil, opkit.Errorf("SwiGLUPacked", "want 1 input, got %d", len(inputs))
	}
	dz, err := G.ApplyOp(swigluPackedGradOp{}, inputs[0], grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dz}, nil
}

// DoDiff accumulates dz into z's gradient.
func (op swigluPackedOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("SwiGLUPacked.DoDiff", inputs, output, 1, 0, "z", func(dy G.Value) (G.Value, error) {
		return swigluPackedGradOp{}.Do(inputs[0].Value(), dy)
	})
}

// swigluPackedGradOp: z [R,2F], dy [R,F] → dz [R,2F].
type swigluPackedGradOp struct{ opkit.Base }

func (op swigluPackedGradOp) Arity() int { return 2 }

func (op swigluPackedGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(t, t, t)
}

func (op swigluPackedGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "SwiGLUPackedGrad"
	if len(ds) != 2 {
		return nil, opkit.Errorf(name, "want 2 inputs, got %d", len(ds))
	}
	z, err := shapeOf(name, "z", ds[0])
	if err != nil {
		return nil, err
	}
	dy, err := shapeOf(name, "dy", ds[1])
	if err != nil {
		return nil, err
	}
	if err := packedGradShapes(name, z, dy); err != nil {
		return nil, err
	}
	return z.Clone(), nil
}

// packedGradShapes checks z [R,2F] and dy [R,F].
func packedGradShapes(name string, z, dy tensor.Shape) error {
	if err := checkPackedShape(name, z); err != nil {
		return err
	}
	if dy.Dims() != 2 || dy[0] != z[0] || dy[1] != z[1]/2 {
		return opkit.Errorf(name, "dy has shape %v, want (%d, %d) for z %v", dy, z[0], z[1]/2, z)
	}
	return nil
}

func (op swigluPackedGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "SwiGLUPackedGrad"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if err := packedValue(name, vs[0]); err != nil {
		return nil, err
	}
	z := vs[0].Shape()
	if err := checkValue(name, "dy", vs[1], vs[0].Dtype(), dim{"R", z[0]}, dim{"F", z[1] / 2}); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		gs, err := dev.PointwiseGrad(swigluPackedDesc, vs[:1], nil, vs[1], []bool{true})
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return gs[0], nil
	}
	switch vs[0].Dtype() {
	case bfloat16.Dtype:
		return viaFloat32(name, vs, func(ws []G.Value) (G.Value, error) { return packedBackward[float32](ws[0], ws[1]) })
	case tensor.Float32:
		return packedBackward[float32](vs[0], vs[1])
	}
	return packedBackward[float64](vs[0], vs[1])
}

func packedBackward[F float32 | float64](zv, dyv G.Value) (G.Value, error) {
	const name = "SwiGLUPackedGrad"
	z, err := hostFloats[F](name, "z", zv)
	if err != nil {
		return nil, err
	}
	dy, err := hostFloats[F](name, "dy", dyv)
	if err != nil {
		return nil, err
	}
	out, dz := newDense[F](zv.Shape().Clone()...)
	if err := kernels.SwiGLUPackedBackward(dz, z, dy, zv.Shape()[1]/2); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op swigluPackedGradOp) String() string        { return "op.SwiGLUPackedGrad{}" }
func (op swigluPackedGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op swigluPackedGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }
