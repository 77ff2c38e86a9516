package ep

import (
	"fmt"
	"hash/fnv"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Private helpers shared by the ep ops. Every error carries the prefix "gomoe: <op name>: ".

func errorf(name, format string, a ...any) error {
	return fmt.Errorf("gomoe: %s: %s", name, fmt.Sprintf(format, a...))
}

func wrapErr(name string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("gomoe: %s: %w", name, err)
}

func fnvHash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// geometryKey spells out every field of g.
func geometryKey(g kernels.Geometry) string {
	return fmt.Sprintf("T=%d K=%d E=%d A=%d mode=%v C=%d drop=%v pad=%v", g.T, g.K, g.E, g.A, g.Mode, g.C, g.Drop, g.PadToCapacity)
}

// commKey identifies a communicator in op hashes and names.
func commKey(c Communicator) string {
	if s, ok := c.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T[rank %d of %d]", c, c.Rank(), c.Size())
}

func shapeString(s tensor.Shape) string {
	parts := make([]string, len(s))
	for i, n := range s {
		parts[i] = fmt.Sprint(n)
	}
	return "(" + strings.Join(parts, ", ") + ")"
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
	return errorf(name, "%s has shape %s, want (%s)", what, shapeString(s), strings.Join(parts, ", "))
}

func shapesOf(name string, ds []G.DimSizer, n int) ([]tensor.Shape, error) {
	if len(ds) != n {
		return nil, errorf(name, "got %d input shapes, want %d", len(ds), n)
	}
	out := make([]tensor.Shape, n)
	for i, d := range ds {
		s, ok := d.(tensor.Shape)
		if !ok {
			return nil, errorf(name, "input %d has a %T shape, want a tensor.Shape", i, d)
		}
		out[i] = s
	}
	return out, nil
}

func checkArity(name string, vs []G.Value, n int) error {
	if len(vs) != n {
		return errorf(name, "got %d inputs, want %d", len(vs), n)
	}
	for i, v := range vs {
		if v == nil {
			return errorf(name, "input %d is nil", i)
		}
	}
	return nil
}

// nodeDtype returns a node's dtype without Gorgonia's panic for nodes of unusual types.
func nodeDtype(name, what string, n *G.Node) (dt tensor.Dtype, err error) {
	if n == nil {
		return dt, errorf(name, "%s is nil", what)
	}
	defer func() {
		if r := recover(); r != nil {
			err = errorf(name, "%s has no dtype: %v", what, r)
		}
	}()
	return n.Dtype(), nil
}

// applyOp is G.ApplyOp that turns a panic inside Gorgonia into an error.
func applyOp(name string, o G.Op, children ...*G.Node) (n *G.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = nil, errorf(name, "gorgonia panicked while building the node: %v", r)
		}
	}()
	n, err = G.ApplyOp(o, children...)
	if err != nil {
		return nil, wrapErr(name, err)
	}
	return n, nil
}

// hostDense returns v as a contiguous host *tensor.Dense.
func hostDense(name, what string, v G.Value) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, errorf(name, "%s is a %T, want a *tensor.Dense", what, v)
	}
	if d.RequiresIterator() {
		m, ok := d.Materialize().(*tensor.Dense)
		if !ok {
			return nil, errorf(name, "%s: cannot materialize the view", what)
		}
		d = m
	}
	return d, nil
}

// hostPlan checks a plan value of geometry g and returns its typed view. A device plan is
// copied to the host first (a host sync).
func hostPlan(name, what string, g kernels.Geometry, v G.Value) (kernels.Plan, error) {
	if onDevice(v) {
		h, err := device.ToHost(v)
		if err != nil {
			return kernels.Plan{}, wrapErr(name, err)
		}
		v = h
	}
	if v.Dtype() != tensor.Int32 {
		return kernels.Plan{}, errorf(name, "%s has dtype %v, want int32", what, v.Dtype())
	}
	if err := checkShape(name, what, v.Shape(), g.PlanLen()); err != nil {
		return kernels.Plan{}, err
	}
	d, err := hostDense(name, what, v)
	if err != nil {
		return kernels.Plan{}, err
	}
	flat, ok := d.Data().([]int32)
	if !ok || len(flat) != g.PlanLen() {
		return kernels.Plan{}, errorf(name, "%s holds %T, want []int32 of %d", what, d.Data(), g.PlanLen())
	}
	p, err := g.View(flat)
	if err != nil {
		return kernels.Plan{}, wrapErr(name, err)
	}
	if err := p.Check(); err != nil {
		return kernels.Plan{}, wrapErr(name, fmt.Errorf("%s: %w", what, err))
	}
	return p, nil
}

// hostRows returns the data of a host float matrix value [rows, w] as a Buffer.
func hostRows(name, what string, v G.Value, rows int) (Buffer, error) {
	if dt := v.Dtype(); dt != tensor.Float32 && dt != tensor.Float64 {
		return Buffer{}, errorf(name, "%s has dtype %v, want float32 or float64", what, dt)
	}
	if err := checkShape(name, what, v.Shape(), rows, -1); err != nil {
		return Buffer{}, err
	}
	d, err := hostDense(name, what, v)
	if err != nil {
		return Buffer{}, err
	}
	b, err := HostBuffer(d.Data(), v.Shape()[1])
	if err != nil {
		return Buffer{}, wrapErr(name, err)
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
