package op

import (
	"reflect"
	"unsafe"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Host values: where the inputs live (host or device), the data of host tensors, output
// buffers for the host kernels, and the typed view of a host plan.

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
	if d.Dims() == 0 && d.Shape().TotalSize() == 1 {
		// A 0-d tensor (tensor.FromScalar): its Data() is the value and its DataSize() 0, so
		// the branch below read it as empty (Scale of it gave 0, and a gradient added into it
		// was lost). Its typed accessor gives its one element, sharing its memory.
		var zero F
		if d.Dtype().Type != reflect.TypeOf(zero) {
			return nil, opkit.Errorf(name, "%s has dtype %v, want %T", what, d.Dtype(), zero)
		}
		var one any
		switch any(zero).(type) {
		case float32:
			one = d.Float32s()
		case float64:
			one = d.Float64s()
		case int32:
			one = d.Int32s()
		}
		if s, ok := one.([]F); ok && len(s) == 1 {
			return s, nil
		}
		return nil, opkit.Errorf(name, "%s is a 0-d tensor of %v, want one %T", what, d.Dtype(), zero)
	}
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
// else pre after checking that it is a contiguous host tensor of the right dtype and shape.
// pre is not cleared: every kernel it is given checks its inputs (an output sharing memory
// with an input among them) before it writes, then writes every element of its output (zero
// where no value lands), so a refused call leaves pre and the inputs as they were, and stale
// data never survives (TestUsePrealloc).
func outDense[F kernels.Float | int32](name string, pre G.Value, shape ...int) (*tensor.Dense, []F, error) {
	if pre == nil {
		if err := opkit.CheckAlloc(name, int(unsafe.Sizeof(*new(F))), shape...); err != nil {
			return nil, nil, err
		}
		d, s := newDense[F](shape...)
		return d, s, nil
	}
	d, ok := pre.(*tensor.Dense)
	if !ok || d == nil || d.RequiresIterator() || d.IsView() { // a nil *tensor.Dense panicked here
		return nil, nil, opkit.Errorf(name, "preallocated output is a %T view or non-dense value", pre)
	}
	if err := hostPrealloc(name, pre); err != nil {
		return nil, nil, err
	}
	if !d.Shape().Eq(tensor.Shape(shape)) {
		return nil, nil, opkit.Errorf(name, "preallocated output has shape %v, want %v", opkit.ShapeString(d.Shape()), opkit.ShapeString(shape))
	}
	s, ok := d.Data().([]F)
	if !ok || len(s) != d.Shape().TotalSize() {
		var zero F
		return nil, nil, opkit.Errorf(name, "preallocated output has dtype %v, want %T", d.Dtype(), zero)
	}
	return d, s, nil
}

// hostPrealloc refuses a preallocated output of a host kernel that lives in device memory
// (the register of an earlier step run on the device): the kernel would write it from the
// host through its Data(), which points at device memory.
func hostPrealloc(name string, pre G.Value) error {
	if device.Of(pre) != nil {
		return opkit.Errorf(name, "preallocated output is a device value but the inputs are on the host; copy them to one place first")
	}
	return nil
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
