package op

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
)

// OnDevice reports whether v lives in GPU memory (of the gomoecuda build's device engine).
func OnDevice(v G.Value) bool { return opkit.Missing(v) == "" && device.Of(v) != nil }

// HostCopy returns a host copy of v: downloaded from the GPU (waiting for it) when v lives
// there, else a clone. It is how code outside a graph reads a device value (counts, a loss).
func HostCopy(v G.Value) (*tensor.Dense, error) {
	if m := opkit.Missing(v); m != "" {
		return nil, fmt.Errorf("gomoe: HostCopy of a value that is %s", m)
	}
	if dev := device.Of(v); dev != nil {
		h, err := dev.Download(v)
		return h, opkit.Wrap("HostCopy", err)
	}
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("gomoe: HostCopy of a %T", v)
	}
	c, ok := d.Clone().(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("gomoe: HostCopy: clone of a %T", d)
	}
	return c, nil
}

// WriteBack copies the host tensor h into dst (same dtype and size), uploading it when dst
// lives on the GPU. A device value as h is an error.
func WriteBack(dst G.Value, h *tensor.Dense) error {
	if m := opkit.Missing(dst); m != "" {
		return fmt.Errorf("gomoe: WriteBack: the destination is %s", m)
	}
	if m := opkit.Missing(h); m != "" {
		return fmt.Errorf("gomoe: WriteBack: the source is %s", m)
	}
	if device.Of(h) != nil {
		// A host destination was filled by tensor.Copy, reading device memory from the host.
		return fmt.Errorf("gomoe: WriteBack: the source is a device value, want a host tensor (HostCopy it first)")
	}
	if dst.Dtype() != h.Dtype() || dst.Shape().TotalSize() != h.Shape().TotalSize() {
		return fmt.Errorf("gomoe: WriteBack of %v %v into %v %v", h.Dtype(), h.Shape(), dst.Dtype(), dst.Shape())
	}
	if dev := device.Of(dst); dev != nil {
		return opkit.Wrap("WriteBack", dev.Write(dst, h))
	}
	d, ok := dst.(*tensor.Dense)
	if !ok || d.RequiresIterator() {
		return fmt.Errorf("gomoe: WriteBack into a %T view or non-dense value", dst)
	}
	return opkit.Wrap("WriteBack", tensor.Copy(d, h))
}
