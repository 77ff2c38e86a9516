package ep

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
)

// The ep ops move values that live in GPU memory through package device's backend
// (device.Of: the device engine's in the gomoecuda build, none in the default build, where
// every value is a host value) and a device communicator (package ep/nccl), without copying
// the rows through the host.
//
// Plans on the device are copied to the host where the ops need their counts (the plan op, and
// each exchange for its block lists): that is the documented host sync of expert parallelism.

// onDevice reports whether v is a device value.
func onDevice(v G.Value) bool { return v != nil && device.Of(v) != nil }

// deviceBuffer describes the device value v as a Buffer of rows of its last dimension.
func deviceBuffer(v G.Value) (Buffer, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return Buffer{}, fmt.Errorf("ep: device value is a %T, want a *tensor.Dense", v)
	}
	if device.Of(d) == nil {
		return Buffer{}, fmt.Errorf("ep: value is not on a device engine")
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
