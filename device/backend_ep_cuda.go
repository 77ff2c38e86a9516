//go:build gomoecuda

package device

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// The methods of cudaBackend that package ep's ops use to move the values of an Engine. A
// device communicator (package ep/nccl) must be on the engine's GPU: both use the device's
// primary context, and the communicator's stream is a blocking stream, so its work is ordered
// after the kernels the engine enqueued on the default stream before it, and before those
// enqueued after it.

// epEngine returns the engine that holds v and v as a dense tensor, or an error.
func epEngine(v G.Value) (*Engine, *tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, nil, fmt.Errorf("ep: device value is a %T, want a *tensor.Dense", v)
	}
	e := Lookup(d)
	if e == nil {
		return nil, nil, fmt.Errorf("ep: value is not on a device engine")
	}
	return e, d, nil
}

func (cudaBackend) StepZeros(like G.Value, dt tensor.Dtype, shape ...int) (G.Value, error) {
	e, _, err := epEngine(like)
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

// DownloadChecked also reports what the device kernels flagged before the copy (a bad expert id, a NaN
// score at the top-k: the GPU kernels flag them instead of failing, see kernels.StatusError):
// the copy is the host sync of the expert-parallel plan, the last point before the rows move
// where a rank can still fail, and abort, instead of sending a plan built from bad input.
func (cudaBackend) DownloadChecked(v G.Value) (*tensor.Dense, error) {
	e, d, err := epEngine(v)
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

func (cudaBackend) Add(dst, src G.Value) error {
	e, d, err := epEngine(dst)
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
