package opkit

import (
	"fmt"
	"hash"
	"io"

	G "gorgonia.org/gorgonia"
)

// Base is embedded in every Gorgonia op of packages op and ep for the Op methods whose answer
// is the same for all of them: no op returns a pointer into its inputs, calls outside Go in a
// way Gorgonia must know of, or overwrites an input.
//
// The op's identity is its String, which names the op ("op.Permute", "ep.Dispatch": the
// package and the op, as in error text) and every parameter; WriteHash and Hashcode are
// derived from it with this package's WriteHash and Hashcode, so that two ops that differ in
// any parameter are different nodes. (Base cannot define them itself: an embedded type cannot
// see the op that embeds it.)
type Base struct{}

// ReturnsPtr is false: every op returns a value of its own.
func (Base) ReturnsPtr() bool { return false }

// CallsExtern is false.
func (Base) CallsExtern() bool { return false }

// OverwritesInput is -1: no op writes into an input.
func (Base) OverwritesInput() int { return -1 }

// WriteHash writes op's String (its name and every parameter) to h: an op's WriteHash.
func WriteHash(h hash.Hash, op fmt.Stringer) { io.WriteString(h, op.String()) }

// Hashcode is the hash of op's String (its name and every parameter): an op's Hashcode.
func Hashcode(op fmt.Stringer) uint32 { return Hash(op.String()) }

// NoGrad is embedded, beside Base, in the ops whose output has no gradient (a selection, a
// plan, counts, noise): DiffWRT is all false, SymDiff returns no gradients and DoDiff adds
// nothing.
type NoGrad struct{}

// DiffWRT is all false: no input has a gradient through the op.
func (NoGrad) DiffWRT(n int) []bool { return make([]bool, n) }

// SymDiff returns no gradients.
func (NoGrad) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	return make(G.Nodes, len(inputs)), nil
}

// DoDiff has nothing to accumulate.
func (NoGrad) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error { return nil }
