//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// Element-wise arithmetic of the device engine: the launchers of binary.cuh's kernels (the CPU
// side is Gorgonia's arithmetic, see op/pointwise.go). Like the other launchers they enqueue on
// the default stream and never wait.

func init() {
	for _, s := range []string{"f32", "f64", "bf16"} {
		kernelNames = append(kernelNames, "add_"+s, "binop_"+s)
	}
}

// Add writes out[i] = a[i] + b[i] for n elements of d (bfloat16 adds in float32 and rounds
// once). out may alias a or b.
func (c *CUDA) Add(d DType, out, a, b cu.DevicePtr, n int64) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device add: unknown dtype %v", d)
	}
	return c.do(func() error {
		return c.launch("add_"+d.suffix(), ewiseGrid(n, d.Size()), 256, 0, *new(args).p(a).p(b).p(out).l(n))
	})
}

// BinaryOp is an element-wise arithmetic operation of Binary.
type BinaryOp int

const (
	// OpAdd is a + b.
	OpAdd BinaryOp = iota
	// OpSub is a − b.
	OpSub
	// OpMul is a·b.
	OpMul
	// OpDiv is a / b.
	OpDiv
)

// Binary writes out[i] = a[i] op b[i] for n elements (bfloat16 computes in float32 and rounds
// once). A zero a (or b) pointer means the scalar s instead of that tensor (not both). out may
// alias a or b.
func (c *CUDA) Binary(d DType, op BinaryOp, out, a, b cu.DevicePtr, s float64, n int64) error {
	if !d.valid() {
		return fmt.Errorf("gomoe: device %v: unknown dtype %v", op, d)
	}
	if op < OpAdd || op > OpDiv {
		return fmt.Errorf("gomoe: device arithmetic: unknown op %d", int(op))
	}
	mode := 0
	switch {
	case a == 0 && b == 0:
		return fmt.Errorf("gomoe: device arithmetic: two scalars")
	case b == 0:
		mode = 1
	case a == 0:
		mode = 2
	}
	return c.do(func() error {
		return c.launch("binop_"+d.suffix(), ewiseGrid(n, d.Size()), 256, 0,
			*new(args).i(int(op)).i(mode).p(a).p(b).d(s).p(out).l(n))
	})
}
