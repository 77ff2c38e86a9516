//go:build gomoecuda

package kernels

import (
	"fmt"

	"gorgonia.org/cu"
)

// CUDA twins of embedding.go (kernels in embedding.cuh). Like the other launchers they enqueue on
// the default stream and never wait. Every launcher takes float32 or float64 data.

func init() {
	for _, s := range []string{"f32", "f64"} {
		kernelNames = append(kernelNames, "embed_fwd_"+s, "embed_bwd_"+s)
	}
}

// StatusBadIndex is the status bit Embedding sets for an id outside [0, V) (its row of the
// output is then 0).
const StatusBadIndex = 16

// Embedding writes out[i,:] = table[ids[i],:] for table [V, cols] and ids [n] int32. An id
// outside [0, V) gives a zero row and sets StatusBadIndex.
func (c *CUDA) Embedding(d DType, out, table, ids cu.DevicePtr, n int64, V, cols int) error {
	if err := nnCheck("Embedding", d, n, cols); err != nil {
		return err
	}
	if V < 1 {
		return fmt.Errorf("gomoe: device Embedding: %d table rows", V)
	}
	if err := colsFit("Embedding", V); err != nil {
		return err
	}
	total := n * int64(cols)
	return c.do(func() error {
		return c.launch("embed_fwd_"+d.suffix(), gridFor(total, 256), 256, 0,
			*new(args).p(table).p(ids).p(out).l(total).i(cols).i(V).p(c.status))
	})
}

// EmbeddingBackward writes dtable [V, cols] = Σ over the n rows of dy whose id is v (double
// sums in row order, bitwise the CPU's); ids outside [0, V) are skipped.
func (c *CUDA) EmbeddingBackward(d DType, dtable, dy, ids cu.DevicePtr, n int64, V, cols int) error {
	if err := nnCheck("EmbeddingBackward", d, n, cols); err != nil {
		return err
	}
	if V < 1 {
		return fmt.Errorf("gomoe: device EmbeddingBackward: %d table rows", V)
	}
	if err := colsFit("EmbeddingBackward", V); err != nil {
		return err
	}
	return c.do(func() error {
		return c.launch("embed_bwd_"+d.suffix(), gridFor(int64(V)*int64(cols), 256), 256, 0,
			*new(args).p(dy).p(ids).p(dtable).l(n).i(cols).i(V))
	})
}
