package ep

import (
	"fmt"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/device"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Private helpers of the ep ops; what they share with package op is in internal/opkit (errors
// "gomoe: <op name>: ...", hashes, node building, value checks).

// commKey identifies a communicator in op hashes and names.
func commKey(c Communicator) string {
	if s, ok := c.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T[rank %d of %d]", c, c.Rank(), c.Size())
}

// checkShape checks s against want (a negative entry: any size >= 1).
func checkShape(name, what string, s tensor.Shape, want ...int) error {
	ok := len(s) == len(want)
	for i := 0; ok && i < len(s); i++ {
		ok = (want[i] >= 0 && s[i] == want[i]) || (want[i] < 0 && s[i] >= 1)
	}
	if ok {
		return nil
	}
	parts := make([]string, len(want))
	for i, w := range want {
		if w < 0 {
			parts[i] = "H"
		} else {
			parts[i] = fmt.Sprint(w)
		}
	}
	return opkit.Errorf(name, "%s has shape %s, want (%s)", what, opkit.ShapeString(s), strings.Join(parts, ", "))
}

func shapesOf(name string, ds []G.DimSizer, n int) ([]tensor.Shape, error) {
	if len(ds) != n {
		return nil, opkit.Errorf(name, "got %d input shapes, want %d", len(ds), n)
	}
	out := make([]tensor.Shape, n)
	for i, d := range ds {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, opkit.Errorf(name, "input %d has a %T shape, want a tensor.Shape", i, d)
		}
		out[i] = s
	}
	return out, nil
}

// hostPlan checks a plan value of geometry g and returns its typed view. A device plan is
// copied to the host first (a host sync).
func hostPlan(name, what string, g kernels.Geometry, v G.Value) (kernels.Plan, error) {
	if dev := device.Of(v); dev != nil {
		h, err := dev.DownloadChecked(v)
		if err != nil {
			return kernels.Plan{}, opkit.Wrap(name, err)
		}
		v = h
	}
	if v.Dtype() != tensor.Int32 {
		return kernels.Plan{}, opkit.Errorf(name, "%s has dtype %v, want int32", what, v.Dtype())
	}
	if err := checkShape(name, what, v.Shape(), g.PlanLen()); err != nil {
		return kernels.Plan{}, err
	}
	d, err := opkit.HostDense(name, what, v)
	if err != nil {
		return kernels.Plan{}, err
	}
	flat, ok := d.Data().([]int32)
	if !ok || len(flat) != g.PlanLen() {
		return kernels.Plan{}, opkit.Errorf(name, "%s holds %T, want []int32 of %d", what, d.Data(), g.PlanLen())
	}
	p, err := g.View(flat)
	if err != nil {
		return kernels.Plan{}, opkit.Wrap(name, err)
	}
	if err := p.Check(); err != nil {
		return kernels.Plan{}, opkit.Wrap(name, fmt.Errorf("%s: %w", what, err))
	}
	return p, nil
}

// hostRows returns the data of a host float matrix value [rows, w] as a Buffer.
func hostRows(name, what string, v G.Value, rows int) (Buffer, error) {
	if dt := v.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return Buffer{}, opkit.Errorf(name, "%s has dtype %v, want float32 or float64", what, dt)
	}
	if err := checkShape(name, what, v.Shape(), rows, -1); err != nil {
		return Buffer{}, err
	}
	d, err := opkit.HostDense(name, what, v)
	if err != nil {
		return Buffer{}, err
	}
	b, err := HostBuffer(d.Data(), v.Shape()[1])
	if err != nil {
		return Buffer{}, opkit.Wrap(name, err)
	}
	return b, nil
}

// zeros allocates a zeroed host matrix [rows, w] of dtype dt.
func zeros(dt tensor.Dtype, rows, w int) (*tensor.Dense, Buffer) {
	var data any
	if dt == tensor.Float32 {
		data = make([]float32, rows*w)
	} else {
		data = make([]float64, rows*w)
	}
	t := tensor.New(tensor.WithShape(rows, w), tensor.WithBacking(data))
	return t, Buffer{Host: data, Dtype: dt, Rows: rows, Width: w}
}
