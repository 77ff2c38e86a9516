package op

import (
	"fmt"
	"reflect"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// This file holds the private helpers that every op in the package shares: shape checks,
// dtype dispatch, value conversion and gradient accumulation. What package ep shares too
// (errors, hashes, node building, value checks) is in internal/opkit.

// shapeOf returns the tensor.Shape of a DimSizer (Gorgonia passes a tensor.Shape for every
// ordinary node).
func shapeOf(name, what string, d G.DimSizer) (tensor.Shape, error) {
	s, ok := d.(tensor.Shape)
	if !ok {
		return nil, opkit.Errorf(name, "%s: shape is a %T, want a tensor.Shape", what, d)
	}
	return s, nil
}

// shapesOf checks that ds holds len(whats) shapes and returns them.
func shapesOf(name string, ds []G.DimSizer, whats ...string) ([]tensor.Shape, error) {
	if len(ds) != len(whats) {
		return nil, opkit.Errorf(name, "got %d input shapes, want %d (%s)", len(ds), len(whats), strings.Join(whats, ", "))
	}
	out := make([]tensor.Shape, len(ds))
	for i, d := range ds {
		s, err := shapeOf(name, whats[i], d)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

// dim is a wanted dimension for checkShape: a size (n >= 0) or any size >= 1 (n < 0).
type dim struct {
	label string
	n     int
}

// checkShape checks that s has len(want) dims of the wanted sizes. The error shows the wanted
// shape with its labels, e.g. "x has shape (5, 3), want (T=4, H)".
func checkShape(name, what string, s tensor.Shape, want ...dim) error {
	ok := len(s) == len(want)
	for i := 0; ok && i < len(s); i++ {
		if want[i].n >= 0 {
			ok = s[i] == want[i].n
		} else {
			ok = s[i] >= 1
		}
	}
	if ok {
		return nil
	}
	parts := make([]string, len(want))
	for i, w := range want {
		switch {
		case w.n >= 0 && w.label != "":
			parts[i] = fmt.Sprintf("%s=%d", w.label, w.n)
		case w.n >= 0:
			parts[i] = fmt.Sprint(w.n)
		default:
			parts[i] = w.label + ">=1"
		}
	}
	return opkit.Errorf(name, "%s has shape %v, want (%s)", what, opkit.ShapeString(s), strings.Join(parts, ", "))
}

// isFloat reports whether dt is a data dtype the CPU kernels support.
func isFloat(dt tensor.Dtype) bool { return dt == tensor.Float32 || dt == tensor.Float64 }

// wantFloat checks that dt is float32 or float64, for node functions that prefix the error
// with their own name.
func wantFloat(dt tensor.Dtype) error {
	if !isFloat(dt) {
		return fmt.Errorf("dtype %v, want float32 or float64", dt)
	}
	return nil
}

// checkFloat checks that dt is float32 or float64.
func checkFloat(name, what string, dt tensor.Dtype) error {
	if !isFloat(dt) {
		return opkit.Errorf(name, "%s has dtype %v, want float32 or float64", what, dt)
	}
	return nil
}

// isData reports whether dt is a data dtype of permute and unpermute: float32, float64 or
// bfloat16 (which the CPU path widens to float32 and rounds back once; see bf16.go).
func isData(dt tensor.Dtype) bool { return isFloat(dt) || dt == bfloat16.Dtype }

// checkData checks that dt is a data dtype of permute and unpermute.
func checkData(name, what string, dt tensor.Dtype) error {
	if !isData(dt) {
		return opkit.Errorf(name, "%s has dtype %v, want float32 or float64 or bfloat16", what, dt)
	}
	return nil
}

// probsDtypeFor is the probs dtype that goes with data of dtype data: the data dtype itself,
// except float32 for bfloat16 data.
func probsDtypeFor(data tensor.Dtype) tensor.Dtype {
	if data == bfloat16.Dtype {
		return tensor.Float32
	}
	return data
}

// checkProbsDtype checks the router probs' dtype against the data dtype: the probs have the
// data dtype, except that bfloat16 data takes float32 probs.
func checkProbsDtype(name string, data, probs tensor.Dtype) error {
	if want := probsDtypeFor(data); probs != want {
		if data == bfloat16.Dtype {
			return opkit.Errorf(name, "probs have dtype %v but the data has dtype %v: bfloat16 data takes float32 probs", probs, data)
		}
		return opkit.Errorf(name, "probs have dtype %v but the data has dtype %v: probs must have the data dtype", probs, data)
	}
	return nil
}

// checkInt32 checks that dt is int32, the dtype of every index tensor.
func checkInt32(name, what string, dt tensor.Dtype) error {
	if dt != tensor.Int32 {
		return opkit.Errorf(name, "%s has dtype %v, want int32", what, dt)
	}
	return nil
}

// checkNodes checks that the nodes a node function gets are not nil and share one graph.
func checkNodes(name string, nodes []*G.Node, whats ...string) error {
	var g *G.ExprGraph
	for i, n := range nodes {
		if n == nil {
			return opkit.Errorf(name, "%s is nil", whats[i])
		}
		if i == 0 {
			g = n.Graph()
		} else if n.Graph() != g {
			return opkit.Errorf(name, "%s belongs to another graph than %s", whats[i], whats[0])
		}
	}
	return nil
}

// anyData is the dtype argument of checkValue that accepts every data dtype (isData).
var anyData = tensor.Dtype{Type: reflect.TypeOf(struct{ anyData byte }{})}

// checkValue checks a value's dtype (0: any float dtype; anyData: any data dtype) and shape
// from its metadata alone, so it is safe on device values.
func checkValue(name, what string, v G.Value, dt tensor.Dtype, want ...dim) error {
	if v == nil {
		return opkit.Errorf(name, "%s is nil", what)
	}
	switch {
	case dt == anyData:
		if err := checkData(name, what, v.Dtype()); err != nil {
			return err
		}
	case dt == (tensor.Dtype{}):
		if err := checkFloat(name, what, v.Dtype()); err != nil {
			return err
		}
	case v.Dtype() != dt:
		return opkit.Errorf(name, "%s has dtype %v, want %v", what, v.Dtype(), dt)
	}
	return checkShape(name, what, v.Shape(), want...)
}

// onDevice returns the device backend whose memory holds the values (nil ones are skipped),
// or nil when they are host values (device.Of). A mix of host and device values is an error:
// nothing is copied silently.
func onDevice(name string, vs ...G.Value) (device.Backend, error) {
	b := device.Of(vs...)
	if b == nil {
		return nil, nil
	}
	var nd, nh int
	for _, v := range vs {
		if v == nil {
			continue
		}
		if b.Owns(v) {
			nd++
		} else {
			nh++
		}
	}
	if nd > 0 && nh > 0 {
		return nil, opkit.Errorf(name, "inputs mix device values (%d) and host values (%d); copy them to one place first", nd, nh)
	}
	if nd == 0 {
		return nil, nil
	}
	return b, nil
}

// dataOf returns the backing slice of a host dense tensor whose dtype was checked to be F's.
func dataOf[F kernels.Float | int32](name, what string, d *tensor.Dense) ([]F, error) {
	if d.Shape().TotalSize() == 0 || d.DataSize() == 0 { // Data() of an empty tensor panics in tensor v0.9.24
		var zero F
		if d.Dtype().Type != reflect.TypeOf(zero) {
			return nil, opkit.Errorf(name, "%s has dtype %v, want %T", what, d.Dtype(), zero)
		}
		return []F{}, nil
	}
	s, ok := d.Data().([]F)
	if !ok || len(s) != d.Shape().TotalSize() {
		var zero F
		return nil, opkit.Errorf(name, "%s holds %T, want a []%T of %d elements", what, d.Data(), zero, d.Shape().TotalSize())
	}
	return s, nil
}

// hostFloats converts a host value of dtype F to its data.
func hostFloats[F kernels.Float](name, what string, v G.Value) ([]F, error) {
	d, err := opkit.HostDense(name, what, v)
	if err != nil {
		return nil, err
	}
	return dataOf[F](name, what, d)
}

// newDense allocates a zeroed host tensor of element type F.
func newDense[F kernels.Float | int32](shape ...int) (*tensor.Dense, []F) {
	n := 1
	for _, s := range shape {
		n *= s
	}
	data := make([]F, n)
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data)), data
}

// outDense returns the output buffer for a host kernel: a new zeroed tensor when pre is nil,
// else pre after checking that it is a contiguous host tensor of the right dtype and shape;
// it is zeroed, since it may hold stale data from an earlier run.
func outDense[F kernels.Float | int32](name string, pre G.Value, shape ...int) (*tensor.Dense, []F, error) {
	if pre == nil {
		d, s := newDense[F](shape...)
		return d, s, nil
	}
	d, ok := pre.(*tensor.Dense)
	if !ok || d.RequiresIterator() || d.IsView() {
		return nil, nil, opkit.Errorf(name, "preallocated output is a %T view or non-dense value", pre)
	}
	if !d.Shape().Eq(tensor.Shape(shape)) {
		return nil, nil, opkit.Errorf(name, "preallocated output has shape %v, want %v", opkit.ShapeString(d.Shape()), opkit.ShapeString(shape))
	}
	s, ok := d.Data().([]F)
	if !ok || len(s) != d.Shape().TotalSize() {
		var zero F
		return nil, nil, opkit.Errorf(name, "preallocated output has dtype %v, want %T", d.Dtype(), zero)
	}
	clear(s)
	return d, s, nil
}

// planDim is the wanted shape of a plan vector.
func planDim(g kernels.Geometry) dim { return dim{"PlanLen", g.PlanLen()} }

// checkPlanShape checks a plan node's or value's shape in InferShape or Do.
func checkPlanShape(name string, g kernels.Geometry, s tensor.Shape) error {
	return checkShape(name, "plan", s, planDim(g))
}

// hostPlan returns the typed view of a host plan value. It does not run kernels.Plan.Check:
// every kernel the ops call checks the plan before it reads or writes anything, so a plan
// that did not come from NewPlan (or was corrupted) still gives an error (wrapped with the
// op's name), never a bad memory access, and the check runs once per call.
func hostPlan(name string, g kernels.Geometry, v G.Value) (kernels.Plan, error) {
	if err := checkValue(name, "plan", v, tensor.Int32, planDim(g)); err != nil {
		return kernels.Plan{}, err
	}
	d, err := opkit.HostDense(name, "plan", v)
	if err != nil {
		return kernels.Plan{}, err
	}
	flat, err := dataOf[int32](name, "plan", d)
	if err != nil {
		return kernels.Plan{}, err
	}
	p, err := g.View(flat)
	if err != nil {
		return kernels.Plan{}, opkit.Wrap(name, err)
	}
	return p, nil
}

// gradUpdate is one "dst += src" of a DoDiff: dst is an input's gradient, src the update.
type gradUpdate struct {
	what     string
	dst, src G.Value
}

// accumulate adds every update's src into its dst (dst += src), the contract of DoDiff. All
// updates are checked before any is applied, so an error leaves every gradient as it was.
// Host tensors are added with a plain loop; device tensors through their engine (tensor.Add
// with UseUnsafe).
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
		if device.Of(u.dst, u.src) != nil {
			_, ok1 := u.dst.(tensor.Tensor)
			_, ok2 := u.src.(tensor.Tensor)
			if !ok1 || !ok2 {
				return opkit.Errorf(name, "gradient of %s: cannot add a %T into a %T", u.what, u.src, u.dst)
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
