package kernels

import (
	"fmt"
	"unsafe"
)

// Guards shared by the kernels: sizes whose products could wrap around int, and buffers that
// share memory. Both run before any goroutine starts or any buffer is written.

// maxElems bounds the elements of one buffer (2^50): far beyond any memory, and small enough
// that a product of two checked sizes, and its size in bytes, never wraps around int64.
const maxElems = 1 << 50

// checkWidth checks a row width H (or N) of a kernel whose buffers have up to rows rows.
func checkWidth(what, name string, w, rows int) error {
	if w < 0 {
		return fmt.Errorf("gomoe: %s: %s=%d, want %s >= 0", what, name, w, name)
	}
	if float64(w)*float64(max(rows, 1)) > maxElems {
		return fmt.Errorf("gomoe: %s: %s=%d times %d rows is too large (more than 2^50 elements)", what, name, w, rows)
	}
	return nil
}

// A span is the memory of one buffer, for overlap checks.
type span struct {
	name   string
	lo, hi uintptr
}

// spanOf is the memory of s (empty: no memory, overlapping nothing).
func spanOf[T any](name string, s []T) span {
	if len(s) == 0 {
		return span{name: name}
	}
	lo := uintptr(unsafe.Pointer(unsafe.SliceData(s)))
	return span{name, lo, lo + uintptr(len(s))*unsafe.Sizeof(s[0])}
}

// planSpans are the memory of a plan's parts.
func planSpans(p Plan) []span {
	return []span{spanOf("plan counts", p.Counts), spanOf("plan offsets", p.Offsets), spanOf("plan rowOf", p.RowOf), spanOf("plan tokenOf", p.TokenOf)}
}

// checkDisjoint returns an error if an output shares memory with another output or with an
// input: the kernels read inputs while they write outputs, so an overlap gives wrong values
// (or, for the plan, a corrupt plan and out-of-range writes).
func checkDisjoint(what string, outs, ins []span) error {
	for i, o := range outs {
		if o.lo == o.hi {
			continue
		}
		for j, x := range outs[i+1:] {
			if x.lo < o.hi && o.lo < x.hi {
				return overlapErr(what, o, "output", outs[i+1+j])
			}
		}
		for _, x := range ins {
			if x.lo < o.hi && o.lo < x.hi {
				return overlapErr(what, o, "input", x)
			}
		}
	}
	return nil
}

func overlapErr(what string, o span, kind string, x span) error {
	return fmt.Errorf("gomoe: %s: output %s overlaps %s %s in memory: an output must not share memory with another buffer", what, o.name, kind, x.name)
}

// checkInPlace is checkDisjoint for element-wise and row-wise kernels, which may run in place:
// an output may be exactly an input (the same memory, same length), but must not partly
// overlap one, nor share memory with another output.
func checkInPlace(what string, outs, ins []span) error {
	for i, o := range outs {
		if o.lo == o.hi {
			continue
		}
		for j, x := range outs[i+1:] {
			if x.lo < o.hi && o.lo < x.hi {
				return overlapErr(what, o, "output", outs[i+1+j])
			}
		}
		for _, x := range ins {
			if x.lo < o.hi && o.lo < x.hi && (x.lo != o.lo || x.hi != o.hi) {
				return fmt.Errorf("gomoe: %s: output %s partly overlaps input %s in memory: an output may be exactly an input (in place) or share no memory with it", what, o.name, x.name)
			}
		}
	}
	return nil
}

// sameLen checks that every length in s equals n.
func sameLen(what string, n int, s ...int) error {
	for _, m := range s {
		if err := checkLen(what, m, n); err != nil {
			return err
		}
	}
	return nil
}

// nnShape checks that x holds whole rows of cols elements and that every other length in n
// equals len(x).
func nnShape(what string, cols, x int, n ...int) (rows int, err error) {
	if cols < 1 {
		return 0, fmt.Errorf("gomoe: %s: %d columns", what, cols)
	}
	if x%cols != 0 {
		return 0, fmt.Errorf("gomoe: %s: %d elements are not rows of %d", what, x, cols)
	}
	if err := sameLen(what, x, n...); err != nil {
		return 0, err
	}
	return x / cols, nil
}
