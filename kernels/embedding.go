package kernels

import "fmt"

// The embedding lookup and its gradient. Each has a CUDA twin of the same name on *CUDA
// (embedding_cuda.go, embedding.cuh). Tables are row-major [V, cols]; the gradient sums in
// float64 in index order and is rounded once, so it is deterministic.

// Embedding writes out[i,:] = table[ids[i],:] for table [V, cols] and ids [N]; an id outside
// [0, V) is an error (nothing is written).
func Embedding[F Float](out, table []F, ids []int32, cols int) error {
	V, err := nnShape("Embedding", cols, len(table))
	if err != nil {
		return err
	}
	if err := checkDisjoint("Embedding", []span{spanOf("out", out)}, []span{spanOf("table", table), spanOf("ids", ids)}); err != nil {
		return err
	}
	if err := sameLen("Embedding", len(out), len(ids)*cols); err != nil {
		return err
	}
	for i, v := range ids {
		if v < 0 || int(v) >= V {
			return fmt.Errorf("gomoe: Embedding: id %d at %d is outside [0, %d)", v, i, V)
		}
	}
	for i, v := range ids {
		copy(out[i*cols:(i+1)*cols], table[int(v)*cols:(int(v)+1)*cols])
	}
	return nil
}

// EmbeddingBackward writes dtable[v,:] = Σ_{i: ids[i] = v} dy[i,:] for dtable [V, cols] and
// dy [len(ids), cols] (float64 sums in index order; rows no id names are 0).
func EmbeddingBackward[F Float](dtable, dy []F, ids []int32, cols int) error {
	V, err := nnShape("EmbeddingBackward", cols, len(dtable))
	if err != nil {
		return err
	}
	if err := checkDisjoint("EmbeddingBackward", []span{spanOf("dtable", dtable)}, []span{spanOf("dy", dy), spanOf("ids", ids)}); err != nil {
		return err
	}
	if err := sameLen("EmbeddingBackward", len(dy), len(ids)*cols); err != nil {
		return err
	}
	for i, v := range ids {
		if v < 0 || int(v) >= V {
			return fmt.Errorf("gomoe: EmbeddingBackward: id %d at %d is outside [0, %d)", v, i, V)
		}
	}
	acc := make([]float64, len(dtable))
	for i, v := range ids {
		a, d := acc[int(v)*cols:(int(v)+1)*cols], dy[i*cols:(i+1)*cols]
		for j, x := range d {
			a[j] += float64(x)
		}
	}
	for i, s := range acc {
		dtable[i] = F(s)
	}
	return nil
}
