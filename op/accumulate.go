package op

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Gradient accumulation: the "dst += src" of every DoDiff.

// gradUpdate is one "dst += src" of a DoDiff: dst is an input's gradient, src the update.
type gradUpdate struct {
	what     string
	dst, src G.Value
}

// accumulate adds every update's src into its dst (dst += src), the contract of DoDiff. All
// updates are checked before any is applied, so an error leaves every gradient as it was. A
// gradient and its update must both be host values or both device values.
// Host tensors are added with a plain loop, host scalars (the lisp machine's gradient of a
// scalar node) in their dtype; device tensors through their engine (tensor.Add with
// UseUnsafe).
func accumulate(name string, ups ...gradUpdate) error {
	for _, u := range ups {
		if u.dst == nil || u.src == nil {
			return opkit.Errorf(name, "gradient of %s is missing", u.what)
		}
		if u.dst.Dtype() != u.src.Dtype() || !u.dst.Shape().Eq(u.src.Shape()) {
			return opkit.Errorf(name, "gradient of %s has dtype %v shape %v, the update has %v %v", u.what, u.dst.Dtype(), opkit.ShapeString(u.dst.Shape()), u.src.Dtype(), opkit.ShapeString(u.src.Shape()))
		}
		if err := checkData(name, "gradient of "+u.what, u.dst.Dtype()); err != nil {
			return err
		}
		if b := device.Of(u.dst, u.src); b != nil {
			if dd, ds := b.Owns(u.dst), b.Owns(u.src); !dd || !ds {
				// tensor.Add would run on the first operand's engine: a host engine read the
				// device operand from the host.
				return opkit.Errorf(name, "gradient of %s is a %s value but its update a %s value; copy them to one place first", u.what, place(dd), place(ds))
			}
			_, ok1 := u.dst.(tensor.Tensor)
			_, ok2 := u.src.(tensor.Tensor)
			if !ok1 || !ok2 {
				return opkit.Errorf(name, "gradient of %s: cannot add a %T into a %T", u.what, u.src, u.dst)
			}
			continue
		}
		if isHostScalar(u.dst) {
			if _, err := scalarOf(name, "update of "+u.what, u.src); err != nil {
				return err
			}
			continue
		}
		d, ok := u.dst.(*tensor.Dense)
		if !ok || d.RequiresIterator() {
			return opkit.Errorf(name, "gradient of %s is a %T view or non-dense value", u.what, u.dst)
		}
	}
	for _, u := range ups {
		var err error
		switch {
		case device.Of(u.dst, u.src) != nil:
			_, err = tensor.Add(u.dst.(tensor.Tensor), u.src.(tensor.Tensor), tensor.UseUnsafe())
			err = opkit.Wrap(name, err)
		case isHostScalar(u.dst):
			err = addScalarInto(name, u.what, u.dst, u.src)
		case u.dst.Dtype() == tensor.Float32:
			err = addInto[float32](name, u.what, u.dst.(*tensor.Dense), u.src)
		case u.dst.Dtype() == bfloat16.Dtype:
			err = addIntoBF16(name, u.what, u.dst.(*tensor.Dense), u.src)
		default:
			err = addInto[float64](name, u.what, u.dst.(*tensor.Dense), u.src)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// place names where a value lives for errors: on the device (owned) or the host.
func place(owned bool) string {
	if owned {
		return "device"
	}
	return "host"
}

// isHostScalar reports whether v is a host scalar (*G.F32 or *G.F64): the gradient the lisp
// machine gives a scalar node.
func isHostScalar(v G.Value) bool {
	switch v.(type) {
	case *G.F32, *G.F64:
		return true
	}
	return false
}

// addScalarInto adds a one-element host update into a host scalar gradient, in the
// gradient's dtype.
func addScalarInto(name, what string, dst, src G.Value) error {
	s, err := scalarOf(name, "update of "+what, src)
	if err != nil {
		return err
	}
	switch p := dst.(type) {
	case *G.F64:
		*p += G.F64(s)
	case *G.F32:
		*p += G.F32(float32(s))
	}
	return nil
}

func addInto[F kernels.Float](name, what string, dst *tensor.Dense, src G.Value) error {
	d, err := dataOf[F](name, "gradient of "+what, dst)
	if err != nil {
		return err
	}
	s, err := hostFloats[F](name, "update of "+what, src)
	if err != nil {
		return err
	}
	for i, v := range s {
		d[i] += v
	}
	return nil
}

// diffOne is the DoDiff of an op with one differentiable input: it checks that the op got n
// inputs, computes that input's update from the output's gradient with grad, and accumulates
// it into the gradient of inputs[wrt] (named what).
func diffOne(name string, inputs G.Nodes, output *G.Node, n, wrt int, what string, grad func(dy G.Value) (G.Value, error)) error {
	if len(inputs) != n {
		noun := "inputs"
		if n == 1 {
			noun = "input"
		}
		return opkit.Errorf(name, "want %d %s, got %d", n, noun, len(inputs))
	}
	dy, err := output.Grad()
	if err != nil {
		return err
	}
	d, err := grad(dy)
	if err != nil {
		return err
	}
	g, err := inputs[wrt].Grad()
	if err != nil {
		return err
	}
	return accumulate(name, gradUpdate{what, g, d})
}
