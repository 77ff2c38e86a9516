package op

import (
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
)

// bfloat16 data on the CPU. Permute and unpermute take bfloat16 data (with float32 probs)
// the way the CUDA kernels do: every bfloat16 input is widened to float32 (exactly), the
// float32 CPU kernel runs, and each bfloat16 output is rounded once, to nearest even. The
// CUDA kernels load bfloat16, compute in float32 with the same operation order and round once
// when they store, so both give the same bits (checked on the GPU by op's gomoecuda tests).
// Gradients of the probs stay float32.

// hostBF16s returns the data of a host bfloat16 value.
func hostBF16s(name, what string, v G.Value) ([]bfloat16.BFloat16, error) {
	d, err := opkit.HostDense(name, what, v)
	if err != nil {
		return nil, err
	}
	s, ok := d.Data().([]bfloat16.BFloat16)
	if !ok || len(s) != d.Shape().TotalSize() {
		return nil, opkit.Errorf(name, "%s holds %T, want a []bfloat16.BFloat16 of %d elements", what, d.Data(), d.Shape().TotalSize())
	}
	return s, nil
}

// widenBF16 returns a new host float32 tensor holding the values of the host bfloat16 value v
// (nil for nil).
func widenBF16(name, what string, v G.Value) (G.Value, error) {
	if v == nil {
		return nil, nil
	}
	s, err := hostBF16s(name, what, v)
	if err != nil {
		return nil, err
	}
	d, f := newDense[float32](v.Shape().Clone()...)
	if err := bfloat16.ToFloat32s(f, s); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return d, nil
}

// A namedValue is an input of an op, named for its errors.
type namedValue struct {
	name string
	v    G.Value
}

// bf16Disjoint refuses, before any kernel runs, a preallocated output of a call on bfloat16
// data (outs: the outputs' names and preallocated values, nil where none is given) that is a
// nil tensor or shares memory with an input or the plan (ins). The float32 kernel runs on
// widened copies of the bfloat16 inputs, so its own check, which refuses the same overlaps for
// float32 and float64 data, cannot see them: the result was written over the input.
func bf16Disjoint(name string, outs []namedValue, ins ...namedValue) error {
	for _, o := range outs {
		if o.v == nil {
			continue
		}
		if d, ok := o.v.(*tensor.Dense); ok && d == nil {
			return opkit.Errorf(name, "preallocated output %s is a nil *tensor.Dense", o.name)
		}
		if in, ok := overlapping(o.v, ins); ok {
			return opkit.Errorf(name, "output %s overlaps input %s in memory: an output must not share memory with another buffer", o.name, in)
		}
	}
	return nil
}

// roundBF16 rounds the host float32 tensor src to bfloat16, into pre when it is given (a
// contiguous host bfloat16 tensor of src's shape, checked by bf16Disjoint) or else into a new
// tensor.
func roundBF16(name string, src, pre G.Value) (G.Value, error) {
	f, err := hostFloats[float32](name, "float32 result", src)
	if err != nil {
		return nil, err
	}
	shape := src.Shape()
	var out *tensor.Dense
	var dst []bfloat16.BFloat16
	if pre == nil {
		dst = make([]bfloat16.BFloat16, len(f))
		out = tensor.New(tensor.WithShape(shape.Clone()...), tensor.WithBacking(dst))
	} else {
		d, ok := pre.(*tensor.Dense)
		if !ok || d == nil || d.RequiresIterator() || d.IsView() {
			return nil, opkit.Errorf(name, "preallocated output is a %T view or non-dense value", pre)
		}
		if err := hostPrealloc(name, pre); err != nil {
			return nil, err
		}
		if !d.Shape().Eq(shape) {
			return nil, opkit.Errorf(name, "preallocated output has shape %v, want %v", opkit.ShapeString(d.Shape()), opkit.ShapeString(shape))
		}
		s, ok := d.Data().([]bfloat16.BFloat16)
		if !ok || len(s) != len(f) {
			return nil, opkit.Errorf(name, "preallocated output has dtype %v, want bfloat16", d.Dtype())
		}
		out, dst = d, s
	}
	if err := bfloat16.FromFloat32s(dst, f); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

// addIntoBF16 is dst += src for host bfloat16 gradients: each sum in float32, rounded once.
func addIntoBF16(name, what string, dst *tensor.Dense, src G.Value) error {
	d, err := hostBF16s(name, "gradient of "+what, dst)
	if err != nil {
		return err
	}
	s, err := hostBF16s(name, "update of "+what, src)
	if err != nil {
		return err
	}
	if len(s) != len(d) {
		return opkit.Errorf(name, "gradient of %s has %d elements, the update %d", what, len(d), len(s))
	}
	for i, v := range s {
		d[i] = bfloat16.FromFloat32(d[i].Float32() + v.Float32())
	}
	return nil
}

// overlapping returns the name of the first of ins whose memory overlaps out's.
func overlapping(out G.Value, ins []namedValue) (string, bool) {
	lo, hi := out.Uintptr(), out.Uintptr()+out.MemSize()
	for _, in := range ins {
		if in.v == nil || in.v.MemSize() == 0 {
			continue
		}
		if a := in.v.Uintptr(); a < hi && lo < a+in.v.MemSize() {
			return in.name, true
		}
	}
	return "", false
}
