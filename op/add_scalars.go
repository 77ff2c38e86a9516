package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
)

// AddScalars returns x0 + x1 + … for scalar nodes of one float dtype (float32 or float64),
// added from left to right with each sum rounded to that dtype, as a chain of G.Add gives on
// the host. Use it to add losses that may live on the device (BalanceLoss, ZLoss,
// CrossEntropy): gorgonia's G.Add of two scalar nodes runs on the host and fails on device
// values ("scalarBinOp.Do() - Unhandled Scalar Type"), while AddScalars adds device scalars
// with the device engine's element-wise Add, without copying them to the host; host scalars
// (a constant, such as the zero Loss of an MoE layer without losses) may join them. Its
// gradient is the output gradient for every input. With one node it returns the node itself.
func AddScalars(xs ...*G.Node) (*G.Node, error) {
	const name = "AddScalars"
	if len(xs) == 0 {
		return nil, opkit.Errorf(name, "no inputs")
	}
	whats := make([]string, len(xs))
	for i := range xs {
		whats[i] = fmt.Sprintf("input %d", i)
	}
	if err := checkNodes(name, xs, whats...); err != nil {
		return nil, err
	}
	var dt tensor.Dtype
	for i, x := range xs {
		d, err := opkit.NodeDtype(name, whats[i], x)
		if err != nil {
			return nil, err
		}
		if err := checkFloat(name, whats[i], d); err != nil {
			return nil, err
		}
		if i == 0 {
			dt = d
		} else if d != dt {
			return nil, opkit.Errorf(name, "input %d has dtype %v, input 0 has %v", i, d, dt)
		}
		if !x.IsScalar() {
			return nil, opkit.Errorf(name, "input %d has shape %v, want a scalar", i, opkit.ShapeString(x.Shape()))
		}
	}
	if len(xs) == 1 {
		return xs[0], nil
	}
	return opkit.ApplyOp(name, addScalarsOp{n: len(xs)}, xs...)
}

// addScalarsOp: n scalars → their sum.
type addScalarsOp struct {
	opkit.Base
	n int
}

func (op addScalarsOp) Arity() int { return op.n }

// Type: a → a → … → a.
func (op addScalarsOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	ts := make([]hm.Type, op.n+1)
	for i := range ts {
		ts[i] = a
	}
	return hm.NewFnType(ts...)
}

func (op addScalarsOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != op.n {
		return nil, opkit.Errorf("AddScalars", "got %d input shapes, want %d", len(ds), op.n)
	}
	for i, d := range ds {
		s, err := shapeOf("AddScalars", fmt.Sprintf("input %d", i), d)
		if err != nil {
			return nil, err
		}
		if s.TotalSize() != 1 {
			return nil, opkit.Errorf("AddScalars", "input %d has shape %v, want a scalar", i, opkit.ShapeString(s))
		}
	}
	return tensor.ScalarShape(), nil
}

func (op addScalarsOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "AddScalars"
	if err := opkit.CheckArity(name, vs, op.n); err != nil {
		return nil, err
	}
	for i, v := range vs {
		if err := checkFloat(name, fmt.Sprintf("input %d", i), v.Dtype()); err != nil {
			return nil, err
		}
		if v.Dtype() != vs[0].Dtype() {
			return nil, opkit.Errorf(name, "input %d has dtype %v, input 0 has %v", i, v.Dtype(), vs[0].Dtype())
		}
		if v.Shape().TotalSize() != 1 {
			return nil, opkit.Errorf(name, "input %d has shape %v, want a scalar", i, opkit.ShapeString(v.Shape()))
		}
	}
	if dev := device.Of(vs...); dev != nil {
		first := -1
		for i, v := range vs {
			switch {
			case dev.Owns(v):
				if first < 0 {
					first = i
				}
			case device.Of(v) != nil:
				// Not a host scalar: addDeviceScalars read it through Data(), from the host.
				return nil, opkit.Errorf(name, "input %d is on another device than input %d; copy them to one place first", i, first)
			}
		}
		return addDeviceScalars(name, dev, vs)
	}
	var sum float64
	for i, v := range vs {
		x, err := scalarOf(name, fmt.Sprintf("input %d", i), v)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			sum = x
		} else if v.Dtype() == tensor.Float32 {
			sum = float64(float32(sum) + float32(x))
		} else {
			sum = float64(sum + x)
		}
	}
	if vs[0].Dtype() == tensor.Float32 {
		return G.NewF32(float32(sum)), nil
	}
	return G.NewF64(sum), nil
}

// scalarOf is the value of a one-element float host value (a *G.F32, *G.F64 or a
// one-element host tensor).
func scalarOf(name, what string, v G.Value) (float64, error) {
	switch x := v.(type) {
	case *G.F32:
		return float64(*x), nil
	case *G.F64:
		return float64(*x), nil
	}
	switch x := v.Data().(type) {
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	case []float32:
		return float64(x[0]), nil
	case []float64:
		return x[0], nil
	}
	return 0, opkit.Errorf(name, "%s holds %T, want a float", what, v.Data())
}

// addDeviceScalars adds scalars of which at least one is a device tensor, left to right
// as on the host, through the device engine: each device input is viewed as a vector of one
// element (tensor.Add treats a 0-d tensor as a Go scalar and would read it on the host), and a
// host input (a constant such as the zero loss of a layer without losses) joins as a Go
// scalar. The first sum that involves a device value goes to a new tensor, the later ones add
// into it; the result is a device tensor of scalar shape. dev is the backend of the first
// device input.
func addDeviceScalars(name string, dev device.Backend, vs []G.Value) (G.Value, error) {
	vec := func(i int) (*tensor.Dense, error) {
		d, ok := vs[i].(*tensor.Dense)
		if !ok || d.RequiresIterator() {
			return nil, opkit.Errorf(name, "input %d is a %T, want a contiguous dense tensor", i, vs[i])
		}
		c := d.ShallowClone()
		if err := c.Reshape(1); err != nil {
			return nil, opkit.Wrap(name, err)
		}
		return c, nil
	}
	goScalar := func(v float64) any {
		if vs[0].Dtype() == tensor.Float32 {
			return float32(v)
		}
		return v
	}
	var (
		out     *tensor.Dense // the running sum once a device value joined it (owned)
		devIn   *tensor.Dense // the first device input while it is the running sum (not owned)
		hostSum float64       // the running sum while every input so far is on the host
	)
	for i, v := range vs {
		if dev.Owns(v) {
			x, err := vec(i)
			if err != nil {
				return nil, err
			}
			var r tensor.Tensor
			switch {
			case out != nil:
				r, err = tensor.Add(out, x, tensor.UseUnsafe())
			case devIn != nil:
				r, err = tensor.Add(devIn, x)
			case i == 0:
				devIn = x
				continue
			default:
				r, err = tensor.Add(x, goScalar(hostSum))
			}
			if err != nil {
				return nil, opkit.Wrap(name, err)
			}
			d, ok := r.(*tensor.Dense)
			if !ok {
				return nil, opkit.Errorf(name, "the engine's Add returned a %T", r)
			}
			out = d
			continue
		}
		h, err := scalarOf(name, fmt.Sprintf("input %d", i), v)
		if err != nil {
			return nil, err
		}
		var r tensor.Tensor
		switch {
		case out != nil:
			r, err = tensor.Add(out, goScalar(h), tensor.UseUnsafe())
		case devIn != nil:
			r, err = tensor.Add(devIn, goScalar(h))
			devIn = nil
		case i == 0:
			hostSum = h
			continue
		case vs[0].Dtype() == tensor.Float32:
			hostSum = float64(float32(hostSum) + float32(h))
			continue
		default:
			hostSum += h
			continue
		}
		if err != nil {
			return nil, opkit.Wrap(name, err)
		}
		d, ok := r.(*tensor.Dense)
		if !ok {
			return nil, opkit.Errorf(name, "the engine's Add returned a %T", r)
		}
		out = d
	}
	if out == nil {
		return nil, opkit.Errorf(name, "no device input") // unreachable: the caller found one
	}
	if err := out.Reshape(); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op addScalarsOp) String() string        { return fmt.Sprintf("op.AddScalars{n=%d}", op.n) }
func (op addScalarsOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op addScalarsOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op addScalarsOp) DiffWRT(n int) []bool {
	w := make([]bool, n)
	for i := range w {
		w[i] = true
	}
	return w
}

// SymDiff: every input's gradient is the output gradient.
func (op addScalarsOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != op.n {
		return nil, opkit.Errorf("AddScalars", "want %d inputs, got %d", op.n, len(inputs))
	}
	out := make(G.Nodes, len(inputs))
	for i := range out {
		out[i] = grad
	}
	return out, nil
}

// DoDiff adds the output gradient into every input's gradient (host scalars: the lisp machine
// runs on the host).
func (op addScalarsOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	const name = "AddScalars.DoDiff"
	gy, err := output.Grad()
	if err != nil {
		return err
	}
	dy, err := scalarOf(name, "the output gradient", gy)
	if err != nil {
		return err
	}
	gs := make([]G.Value, len(inputs))
	for i, n := range inputs {
		if gs[i], err = n.Grad(); err != nil {
			return err
		}
		switch gs[i].(type) {
		case *G.F64, *G.F32:
		default:
			return opkit.Errorf(name, "gradient of input %d is a %T, want a host scalar", i, gs[i])
		}
	}
	for _, g := range gs {
		switch p := g.(type) {
		case *G.F64:
			*p += G.F64(dy)
		case *G.F32:
			*p += G.F32(float32(dy))
		}
	}
	return nil
}

var (
	_ G.SDOp = addScalarsOp{}
	_ G.ADOp = addScalarsOp{}
)
