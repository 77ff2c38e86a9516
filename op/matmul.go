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

// MatMul returns the matrix product a·b of a [M,K] and b [K,N] (float32, float64, or
// bfloat16 on the device). Gradients: da = dc·bᵀ, db = aᵀ·dc (themselves MatMul nodes with
// transposed operands).
//
// It is G.Mul for matrices without Gorgonia's preallocation: G.Mul asks for a host output
// buffer on every run, which a device engine must then move to the GPU, so large products
// (the router's input gradient) cost a host allocation each step. MatMul lets the inputs'
// engine allocate its output: cuBLAS on the device engine, the kernels' packed GEMM engine
// (kernels.Gemm: AVX2/AVX-512 assembly on amd64) on the CPU.
func MatMul(a, b *G.Node) (*G.Node, error) {
	const name = "MatMul"
	if a == nil || b == nil {
		return nil, opkit.Errorf(name, "nil input")
	}
	if a.Dims() != 2 || b.Dims() != 2 {
		return nil, opkit.Errorf(name, "a %v and b %v, want two matrices", a.Shape(), b.Shape())
	}
	if a.Dtype() != b.Dtype() || !isData(a.Dtype()) {
		return nil, opkit.Errorf(name, "dtypes %v and %v, want one float dtype", a.Dtype(), b.Dtype())
	}
	if a.Shape()[1] != b.Shape()[0] {
		return nil, opkit.Errorf(name, "a %v times b %v: inner sizes differ", a.Shape(), b.Shape())
	}
	if a.Shape().TotalSize() == 0 || b.Shape().TotalSize() == 0 {
		return nil, opkit.Errorf(name, "a %v times b %v: every size must be >= 1 (an empty matrix)", a.Shape(), b.Shape())
	}
	if err := checkNodes(name, []*G.Node{a, b}, "a", "b"); err != nil {
		return nil, err
	}
	return opkit.ApplyOp(name, matMulOp{}, a, b)
}

// matMulOp: op(a) [M,K] · op(b) [K,N] → [M,N], op(x) = xᵀ when the flag is set.
type matMulOp struct {
	opkit.Base
	ta, tb bool
}

func (op matMulOp) Arity() int { return 2 }

func (op matMulOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	t := G.TensorType{Dims: 2, Of: a}
	return hm.NewFnType(t, t, t)
}

// dims returns the [rows, cols] of op(x) for a stored shape s.
func opDims(s tensor.Shape, t bool) (int, int) {
	if t {
		return s[1], s[0]
	}
	return s[0], s[1]
}

func (op matMulOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	if len(ds) != 2 {
		return nil, opkit.Errorf("MatMul", "want 2 inputs, got %d", len(ds))
	}
	a, err := shapeOf("MatMul", "a", ds[0])
	if err != nil {
		return nil, err
	}
	b, err := shapeOf("MatMul", "b", ds[1])
	if err != nil {
		return nil, err
	}
	if a.Dims() != 2 || b.Dims() != 2 {
		return nil, opkit.Errorf("MatMul", "a %v and b %v, want matrices", a, b)
	}
	m, k := opDims(a, op.ta)
	k2, n := opDims(b, op.tb)
	if k != k2 {
		return nil, opkit.Errorf("MatMul", "%v times %v: inner sizes %d and %d differ", a, b, k, k2)
	}
	if m == 0 || k == 0 || n == 0 { // Do's kernels panic on an empty operand
		return nil, opkit.Errorf("MatMul", "a %v times b %v: every size must be >= 1 (an empty matrix)", a, b)
	}
	return tensor.Shape{m, n}, nil
}

// view returns x, or a transposed view of it (sharing its data) when t.
func view(x G.Value, t bool) (tensor.Tensor, error) {
	d, ok := x.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("a %T is not a *tensor.Dense", x)
	}
	if !t {
		return d, nil
	}
	v := d.ShallowClone()
	if err := v.T(); err != nil {
		return nil, err
	}
	return v, nil
}

func (op matMulOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "MatMul"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if vs[0].Dtype() != vs[1].Dtype() {
		return nil, opkit.Errorf(name, "dtypes %v and %v", vs[0].Dtype(), vs[1].Dtype())
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if _, err := op.InferShape(vs[0].Shape(), vs[1].Shape()); err != nil {
		return nil, err
	}
	av, bv := vs[0], vs[1]
	if dev == nil {
		// A strided host view (a column slice bound with G.Let) is copied to plain rows first:
		// tensor.MatMul reads a view's backing array from its offset as if it were contiguous.
		if av, err = opkit.HostDense(name, "a", av); err != nil {
			return nil, err
		}
		if bv, err = opkit.HostDense(name, "b", bv); err != nil {
			return nil, err
		}
		if c, ok := op.hostGemm(av, bv); ok {
			return c, nil
		}
	}
	a, err := view(av, op.ta)
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	b, err := view(bv, op.tb)
	if err != nil {
		return nil, opkit.Wrap(name, err)
	}
	c, err := tensor.MatMul(a, b)
	return c, opkit.Wrap(name, err)
}

// hostGemm computes the product of two host matrices of float32 or float64 (Do has copied any
// view to plain rows) with the kernels' packed GEMM engine; ok is false for anything else
// (tensor.MatMul takes it).
func (op matMulOp) hostGemm(av, bv G.Value) (G.Value, bool) {
	a, okA := av.(*tensor.Dense)
	b, okB := bv.(*tensor.Dense)
	if !okA || !okB || a.Dtype() != b.Dtype() {
		return nil, false
	}
	m, k := opDims(a.Shape(), op.ta)
	_, n := opDims(b.Shape(), op.tb)
	lda, ldb := a.Shape()[1], b.Shape()[1]
	if m == 0 || n == 0 || k == 0 {
		return nil, false
	}
	switch a.Dtype() {
	case tensor.Float32:
		c := make([]float32, m*n)
		if kernels.Gemm(op.ta, op.tb, m, n, k, a.Float32s(), lda, b.Float32s(), ldb, 0, c, n) != nil {
			return nil, false // tensor.MatMul then reports what is wrong
		}
		return tensor.New(tensor.WithShape(m, n), tensor.WithBacking(c)), true
	case tensor.Float64:
		c := make([]float64, m*n)
		if kernels.Gemm(op.ta, op.tb, m, n, k, a.Float64s(), lda, b.Float64s(), ldb, 0, c, n) != nil {
			return nil, false
		}
		return tensor.New(tensor.WithShape(m, n), tensor.WithBacking(c)), true
	}
	return nil, false
}

func (op matMulOp) String() string        { return fmt.Sprintf("op.MatMul{ta=%v tb=%v}", op.ta, op.tb) }
func (op matMulOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op matMulOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op matMulOp) DiffWRT(int) []bool { return []bool{true, true} }

// gradForm is one gradient of c = op(a)·op(b) as a product of the other input and dc: that
// product's transposition flags, and swap when the other input comes first.
type gradForm struct{ ta, tb, swap bool }

// matMulGrads returns the forms of da and db: d op(a) = dc·op(b)ᵀ and d op(b) = op(a)ᵀ·dc,
// turned back into the stored layouts.
func matMulGrads(ta, tb bool) (da, db gradForm) {
	if ta { // a is stored [K,M]: da = op(b)·dcᵀ
		da = gradForm{ta: tb, tb: true, swap: true}
	} else { // da = dc·op(b)ᵀ
		da = gradForm{tb: !tb}
	}
	if tb { // b is stored [N,K]: db = dcᵀ·op(a)
		db = gradForm{ta: true, tb: ta}
	} else { // db = op(a)ᵀ·dc
		db = gradForm{ta: !ta, swap: true}
	}
	return da, db
}

// operands orders the other input and dc as the form's product takes them.
func operands[T any](f gradForm, other, dc T) (T, T) {
	if f.swap {
		return other, dc
	}
	return dc, other
}

// matMulSymDiff applies daOp and dbOp, the ops of the forms fa and fb, to the inputs and the
// output gradient: the SymDiff of both matrix product ops.
func matMulSymDiff(name string, inputs G.Nodes, grad *G.Node, daOp, dbOp G.Op, fa, fb gradForm) (G.Nodes, error) {
	if len(inputs) != 2 {
		return nil, opkit.Errorf(name, "want 2 inputs, got %d", len(inputs))
	}
	x, y := operands(fa, inputs[1], grad)
	da, err := G.ApplyOp(daOp, x, y)
	if err != nil {
		return nil, err
	}
	x, y = operands(fb, inputs[0], grad)
	db, err := G.ApplyOp(dbOp, x, y)
	if err != nil {
		return nil, err
	}
	return G.Nodes{da, db}, nil
}

// matMulDoDiff computes the gradients as matMulSymDiff's ops do (daOp and dbOp's Do) and adds
// them into the inputs' gradients: the DoDiff of both matrix product ops.
func matMulDoDiff(name string, inputs G.Nodes, output *G.Node, daOp, dbOp G.Op, fa, fb gradForm) error {
	if len(inputs) != 2 {
		return opkit.Errorf(name, "want 2 inputs, got %d", len(inputs))
	}
	g, err := output.Grad()
	if err != nil {
		return err
	}
	da, err := daOp.Do(operands(fa, inputs[1].Value(), g))
	if err != nil {
		return err
	}
	db, err := dbOp.Do(operands(fb, inputs[0].Value(), g))
	if err != nil {
		return err
	}
	ga, err := inputs[0].Grad()
	if err != nil {
		return err
	}
	gb, err := inputs[1].Grad()
	if err != nil {
		return err
	}
	return accumulate(name, gradUpdate{"a", ga, da}, gradUpdate{"b", gb, db})
}

// gradOps returns the MatMul ops of the two gradients and their forms.
func (op matMulOp) gradOps() (daOp, dbOp G.Op, fa, fb gradForm) {
	fa, fb = matMulGrads(op.ta, op.tb)
	return matMulOp{ta: fa.ta, tb: fa.tb}, matMulOp{ta: fb.ta, tb: fb.tb}, fa, fb
}

// SymDiff of c = op(a)·op(b): MatMul nodes with transposed operands (matMulGrads).
func (op matMulOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	daOp, dbOp, fa, fb := op.gradOps()
	return matMulSymDiff("MatMul", inputs, grad, daOp, dbOp, fa, fb)
}

// DoDiff accumulates the gradients computed as SymDiff's ops do.
func (op matMulOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	daOp, dbOp, fa, fb := op.gradOps()
	return matMulDoDiff("MatMul.DoDiff", inputs, output, daOp, dbOp, fa, fb)
}
