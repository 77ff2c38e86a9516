package ep

import (
	"testing"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/internal/opkit/opkittest"
	"github.com/gomoe/gomoe/kernels"
)

// TestOpIdentity checks every op type of the package: changing any one parameter (a geometry
// field, or the communicator) changes the op's String and its hash, and WriteHash and Hashcode
// follow String.
func TestOpIdentity(t *testing.T) {
	_, cs := groupComms(t, 2, 0, 1)
	c0, c1 := cs[0], cs[1]
	// Drop is set: a zero Drop and DropByPosition act alike, and their ops are one op.
	gs := kernels.Geometry{T: 4, K: 2, E: 4, A: 1, Drop: kernels.DropByPosition}
	gl := kernels.Geometry{T: 8, K: 1, E: 2, A: 1, Mode: kernels.Capacity, C: 3, Drop: kernels.DropByPosition}
	ex := exchange{gs: gs, gl: gl, c: c0}
	ops := []G.Op{
		dispatchOp{exchange: ex}, combineOp{exchange: ex},
		planOp{gs: gs, gl: gl, c: c0}, localPlanOp{gs: gs, gl: gl},
	}
	opkittest.CheckCovers(t, ".", ops)
	opkittest.CheckIdentity(t, ops, c0, c1)
}
