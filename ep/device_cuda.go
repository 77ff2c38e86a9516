//go:build gomoecuda

package ep

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	gdev "github.com/gomoe/gomoe/device"
)

// engineBackend moves the values of package device's engine. The NCCL communicator must be on
// the engine's GPU: both use the device's primary context, and the communicator's stream is a
// blocking stream, so its work is ordered after the kernels the engine enqueued on the default
// stream before it, and before those enqueued after it.
type engineBackend struct{}

func init() { device = engineBackend{} }

func engineOf(v G.Value) (*gdev.Engine, *tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, nil, fmt.Errorf("ep: device value is a %T, want a *tensor.Dense", v)
	}
	e := gdev.Lookup(d)
	if e == nil {
		return nil, nil, fmt.Errorf("ep: value is not on a device engine")
	}
	return e, d, nil
}

func (engineBackend) Owns(v G.Value) bool {
	t, ok := v.(tensor.Tensor)
	return ok && gdev.Lookup(t) != nil
}

func (engineBackend) Buffer(v G.Value) (Buffer, error) {
	_, d, err := engineOf(v)
	if err != nil {
		return Buffer{}, err
	}
	s := d.Shape()
	b := Buffer{Device: d.Uintptr(), Dtype: d.Dtype(), Rows: s.TotalSize(), Width: 1}
	if len(s) == 2 {
		b.Rows, b.Width = s[0], s[1]
	}
	if d.RequiresIterator() || d.IsView() {
		return Buffer{}, fmt.Errorf("ep: device value is a view; the exchange needs contiguous rows")
	}
	return b, nil
}

func (engineBackend) Zeros(like G.Value, dt tensor.Dtype, shape ...int) (G.Value, error) {
	e, _, err := engineOf(like)
	if err != nil {
		return nil, err
	}
	t, err := e.NewStepTensor(dt, shape...)
	if err != nil {
		return nil, err
	}
	if t.MemSize() > 0 {
		e.Memclr(t)
	}
	return t, nil
}

// ToHost also reports what the device kernels flagged before the copy (a bad expert id, a NaN
// score at the top-k: the GPU kernels flag them instead of failing, see kernels.StatusError):
// the copy is the host sync of the expert-parallel plan, the last point before the rows move
// where a rank can still fail, and abort, instead of sending a plan built from bad input.
func (engineBackend) ToHost(v G.Value) (*tensor.Dense, error) {
	e, d, err := engineOf(v)
	if err != nil {
		return nil, err
	}
	h, err := e.CopyOut(d)
	if err != nil {
		return nil, err
	}
	if err := e.Status(); err != nil {
		return nil, fmt.Errorf("ep: the GPU flagged bad input before the plan's host copy: %w", err)
	}
	return h, nil
}

func (engineBackend) FromHost(like G.Value, h *tensor.Dense) (G.Value, error) {
	e, _, err := engineOf(like)
	if err != nil {
		return nil, err
	}
	t, err := e.NewStepTensor(h.Dtype(), h.Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	return t, e.Upload(t, h)
}

func (engineBackend) Add(dst, src G.Value) error {
	e, d, err := engineOf(dst)
	if err != nil {
		return err
	}
	s, ok := src.(tensor.Tensor)
	if !ok {
		return fmt.Errorf("ep: gradient update is a %T", src)
	}
	_, err = e.Add(d, s, tensor.UseUnsafe())
	return err
}
