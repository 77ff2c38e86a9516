// Package opkit holds what gomoe's Gorgonia ops (packages op and ep) share: one convention for
// error text ("gomoe: <op name>: <message>"), op hashes, geometry keys, node building that never
// lets a Gorgonia panic escape, checks of the values an op's Do receives (Missing also serves
// the other packages' functions that take a G.Value), and Base, the part of
// the Op interface that is the same for every op (base.go).
package opkit

import (
	"fmt"
	"hash/fnv"
	"reflect"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/kernels"
)

// opError is an error with a message of our own that still unwraps to its cause.
type opError struct {
	msg string
	err error
}

func (e *opError) Error() string { return e.msg }
func (e *opError) Unwrap() error { return e.err }

// Errorf returns an error "gomoe: name: message".
func Errorf(name, format string, a ...any) error {
	return fmt.Errorf("gomoe: %s: %s", name, fmt.Sprintf(format, a...))
}

// Wrap prefixes err with the op name, dropping a "gomoe: " prefix that the cause (for example
// a kernel) already carries, and keeps err as the cause. A nil err stays nil.
func Wrap(name string, err error) error {
	if err == nil {
		return nil
	}
	return &opError{msg: "gomoe: " + name + ": " + strings.TrimPrefix(err.Error(), "gomoe: "), err: err}
}

// Hash is the 32-bit FNV-1a hash of s (ops hash their String).
func Hash(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	return h.Sum32()
}

// GeometryKey spells out every field of g, including those that g.String leaves out, so that
// ops whose geometries differ in any field hash differently. The drop policy is the one g
// applies (g.DropPolicy), so that a zero Drop and DropByPosition, which act alike, key alike.
func GeometryKey(g kernels.Geometry) string {
	return fmt.Sprintf("T=%d K=%d E=%d A=%d mode=%v C=%d drop=%v pad=%v", g.T, g.K, g.E, g.A, g.Mode, g.C, g.DropPolicy(), g.PadToCapacity)
}

// ShapeString writes s as "(d0, d1, ...)".
func ShapeString(s tensor.Shape) string {
	parts := make([]string, len(s))
	for i, n := range s {
		parts[i] = fmt.Sprint(n)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// CheckArity checks that Do got n inputs, none of them missing (Missing).
func CheckArity(name string, vs []G.Value, n int) error {
	if len(vs) != n {
		return Errorf(name, "got %d inputs, want %d", len(vs), n)
	}
	for i, v := range vs {
		if m := Missing(v); m != "" {
			return Errorf(name, "input %d is %s", i, m)
		}
	}
	return nil
}

// Missing says what v lacks to be read as a value: "nil" when v is nil or holds a nil pointer
// (a (*tensor.Dense)(nil) passed as a G.Value), "an empty *tensor.Dense (no dtype, no data)"
// for new(tensor.Dense), and "" for any other value.
func Missing(v G.Value) string {
	switch d := v.(type) {
	case nil:
		return "nil"
	case *tensor.Dense: // every op's Do checks each input: the common case without reflection
		switch {
		case d == nil:
			return "nil"
		case d.Dtype().Type == nil:
			return "an empty *tensor.Dense (no dtype, no data)"
		}
		return ""
	}
	r := reflect.ValueOf(v)
	switch r.Kind() {
	case reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Func, reflect.Chan:
		if r.IsNil() {
			return "nil"
		}
	}
	return ""
}

// NodeDtype is n's dtype, or an error naming what if n is nil or has none.
func NodeDtype(name, what string, n *G.Node) (dt tensor.Dtype, err error) {
	if n == nil {
		return dt, Errorf(name, "%s is nil", what)
	}
	defer func() {
		if r := recover(); r != nil {
			err = Errorf(name, "%s has no dtype: %v", what, r)
		}
	}()
	return n.Dtype(), nil
}

// ApplyOp is G.ApplyOp that turns a panic inside Gorgonia into an error, so that no panic
// escapes a package's node functions.
func ApplyOp(name string, op G.Op, children ...*G.Node) (n *G.Node, err error) {
	defer func() {
		if r := recover(); r != nil {
			n, err = nil, Errorf(name, "gorgonia panicked while building the node: %v", r)
		}
	}()
	n, err = G.ApplyOp(op, children...)
	if err != nil {
		return nil, Wrap(name, err)
	}
	return n, nil
}

// HostDense returns v as a contiguous host *tensor.Dense (a view is materialised).
func HostDense(name, what string, v G.Value) (*tensor.Dense, error) {
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, Errorf(name, "%s is a %T, want a *tensor.Dense", what, v)
	}
	if d.RequiresIterator() {
		m, ok := d.Materialize().(*tensor.Dense)
		if !ok {
			return nil, Errorf(name, "%s: cannot materialize the view", what)
		}
		d = m
	}
	return d, nil
}

// CheckAlloc returns an error if a host output of shape, elemSize bytes an element, does not
// fit in the memory this process may use: a Go allocation that fails ends the process, out of reach of
// any recover. Outputs larger than every input (the permuted rows of a large capacity, a
// grouped matmul's rows, the rows an expert-parallel exchange receives) are checked with it
// before they are made; the size is computed in
// floating point, so no product wraps around.
func CheckAlloc(name string, elemSize int, shape ...int) error {
	b := float64(elemSize)
	for _, s := range shape {
		b *= float64(s)
	}
	if err := hostmem.Check(fmt.Sprintf("an output of shape %s", ShapeString(shape)), b); err != nil {
		return Wrap(name, err)
	}
	return nil
}
