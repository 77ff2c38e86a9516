package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// Embedding returns the rows of table [V,D] that ids [N] (int32, each in [0, V)) name:
// out [N,D] with out[i] = table[ids[i]]. It runs on the device when table and ids live there
// (Gorgonia's ByIndices takes int indices and runs on the host). On the host an id outside
// [0, V) is an error; on the device its row is 0 and the kernels' status reports
// kernels.StatusBadIndex.
//
// Gradient wrt table: dtable[v] = Σ_{i: ids[i] = v} dy[i] (float64 sums in index order, the
// same bits on the host and the device); ids get none. CPU kernels: kernels.Embedding and
// kernels.EmbeddingBackward; on the device their CUDA twins.
func Embedding(table, ids *G.Node) (*G.Node, error) {
	const name = "Embedding"
	if err := checkNodes(name, []*G.Node{table, ids}, "table", "ids"); err != nil {
		return nil, err
	}
	if err := wantFloat(table.Dtype()); err != nil {
		return nil, opkit.Errorf(name, "table: %v", err)
	}
	if err := checkInt32(name, "ids", ids.Dtype()); err != nil {
		return nil, err
	}
	if err := checkShape(name, "table", table.Shape(), dim{"V", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "ids", ids.Shape(), dim{"N", -1}); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, embedOp{v: table.Shape()[0]}, table, ids)
}

// embedOp: table [V,D], ids [N] → out [N,D].
type embedOp struct {
	opkit.Base
	v int
}

func (op embedOp) Arity() int { return 2 }

func (op embedOp) Type() hm.Type { return matIndexType(1) }

func (op embedOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "Embedding"
	s, err := shapesOf(name, ds, "table", "ids")
	if err != nil {
		return nil, err
	}
	if err := checkShape(name, "table", s[0], dim{"V", op.v}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "ids", s[1], dim{"N", -1}); err != nil {
		return nil, err
	}
	return tensor.Shape{s[1][0], s[0][1]}, nil
}

func (op embedOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "Embedding"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	table, ids := vs[0], vs[1]
	if err := checkValue(name, "table", table, tensor.Dtype{}, dim{"V", op.v}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "ids", ids, tensor.Int32, dim{"N", -1}); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, table, ids)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.Embedding(table, ids)
		return v, opkit.Wrap(name, err)
	}
	if table.Dtype() == tensor.Float32 {
		return embedHost[float32](table, ids)
	}
	return embedHost[float64](table, ids)
}

// embedIDs returns the data of a host int32 vector.
func embedIDs(name string, v G.Value) ([]int32, error) {
	d, err := opkit.HostDense(name, "ids", v)
	if err != nil {
		return nil, err
	}
	return dataOf[int32](name, "ids", d)
}

func embedHost[F float32 | float64](table, ids G.Value) (G.Value, error) {
	const name = "Embedding"
	t, err := hostFloats[F](name, "table", table)
	if err != nil {
		return nil, err
	}
	id, err := embedIDs(name, ids)
	if err != nil {
		return nil, err
	}
	D := table.Shape()[1]
	out, o, err := outDense[F](name, nil, len(id), D) // N·D can far exceed both inputs
	if err != nil {
		return nil, err
	}
	if err := kernels.Embedding(o, t, id, D); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op embedOp) String() string        { return fmt.Sprintf("op.Embedding{V=%d}", op.v) }
func (op embedOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op embedOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op embedOp) DiffWRT(int) []bool { return []bool{true, false} }

// SymDiff: dtable = EmbeddingGrad(dy, ids); ids get no gradient.
func (op embedOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf("Embedding", "want 2 inputs, got %d", len(inputs))
	}
	d, err := G.ApplyOp(embedGradOp(op), grad, inputs[1])
	if err != nil {
		return nil, err
	}
	return G.Nodes{d, nil}, nil
}

// DoDiff accumulates the gradient into the table's.
func (op embedOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	return diffOne("Embedding.DoDiff", inputs, output, 2, 0, "table", func(dy G.Value) (G.Value, error) {
		return embedGradOp(op).Do(dy, inputs[1].Value())
	})
}

// embedGradOp: dy [N,D], ids [N] → dtable [V,D].
type embedGradOp struct {
	opkit.Base
	v int
}

func (op embedGradOp) Arity() int { return 2 }

func (op embedGradOp) Type() hm.Type { return matIndexType(1) }

func (op embedGradOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	const name = "EmbeddingGrad"
	s, err := shapesOf(name, ds, "dy", "ids")
	if err != nil {
		return nil, err
	}
	if err := checkShape(name, "dy", s[0], dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkShape(name, "ids", s[1], dim{"N", s[0][0]}); err != nil {
		return nil, err
	}
	return tensor.Shape{op.v, s[0][1]}, nil
}

func (op embedGradOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "EmbeddingGrad"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	dy, ids := vs[0], vs[1]
	if err := checkValue(name, "dy", dy, tensor.Dtype{}, dim{"N", -1}, dim{"D", -1}); err != nil {
		return nil, err
	}
	if err := checkValue(name, "ids", ids, tensor.Int32, dim{"N", dy.Shape()[0]}); err != nil {
		return nil, err
	}
	dev, err := onDevice(name, dy, ids)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.EmbeddingGrad(dy, ids, op.v)
		return v, opkit.Wrap(name, err)
	}
	if dy.Dtype() == tensor.Float32 {
		return embedGradHost[float32](dy, ids, op.v)
	}
	return embedGradHost[float64](dy, ids, op.v)
}

func embedGradHost[F float32 | float64](dy, ids G.Value, V int) (G.Value, error) {
	const name = "EmbeddingGrad"
	d, err := hostFloats[F](name, "dy", dy)
	if err != nil {
		return nil, err
	}
	id, err := embedIDs(name, ids)
	if err != nil {
		return nil, err
	}
	D := dy.Shape()[1]
	out, o := newDense[F](V, D)
	if err := kernels.EmbeddingBackward(o, d, id, D); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return out, nil
}

func (op embedGradOp) String() string        { return fmt.Sprintf("op.EmbeddingGrad{V=%d}", op.v) }
func (op embedGradOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op embedGradOp) Hashcode() uint32      { return opkit.Hashcode(op) }
