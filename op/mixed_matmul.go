package op

import (
	"fmt"
	"hash"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// MixedMatMul returns the matrix product a·b of a [M,K] and b [K,N] as a node of dtype out,
// where a, b and out are each float32 or bfloat16, computed to float32 accuracy. It is how a
// bfloat16 layer computes its float32 router: logits (float32) = x (bfloat16)·router (float32),
// with the gradients dx = dlogits·routerᵀ rounded once to bfloat16 and drouter = xᵀ·dlogits in
// float32 (MixedMatMul nodes themselves). With a, b and out all float64 it is MatMul.
//
// On the CPU bfloat16 operands are widened to float32 (exactly), the product is a float32 GEMM
// (kernels.Gemm) and the result is rounded to out: the bits of Cast and MatMul. On the device
// it runs on bfloat16 tensor cores (device.Backend.SplitMatMul): each float32 operand is split
// exactly into three bfloat16 pieces and the products of the pieces that matter are summed in
// float32 (kernels.CUDA.SplitGemm), three to six times the tensor-core work of one bfloat16
// GEMM but far faster than a float32 GEMM, whose FP32 units run at a fifteenth of the tensor
// cores' rate. Its result differs from the CPU's by the float32 accumulation's rounding, in a
// different order and on the tensor cores' adders: measured at the layer's shapes, rms errors
// of about 10⁻⁷ of Σ|a·b|, 5 to 15 times those of a float32 GEMM (docs/gpu-bench.md). A
// non-finite input gives NaN on the device where the CPU may give ±Inf: Inf times a piece of
// 0, or times two pieces of opposite signs, is NaN.
func MixedMatMul(a, b *G.Node, out tensor.Dtype) (*G.Node, error) {
	const name = "MixedMatMul"
	if a == nil || b == nil {
		return nil, opkit.Errorf(name, "nil input")
	}
	if a.Dims() != 2 || b.Dims() != 2 {
		return nil, opkit.Errorf(name, "a %v and b %v, want two matrices", a.Shape(), b.Shape())
	}
	op := mixedMatMulOp{a: a.Dtype(), b: b.Dtype(), out: out}
	if err := op.checkDtypes(); err != nil {
		return nil, err
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
	return opkit.ApplyOp(name, op, a, b)
}

// mixedMatMulOp: op(a) [M,K] · op(b) [K,N] → [M,N] of dtype out, op(x) = xᵀ when the flag is
// set; a, b and out are the three dtypes.
type mixedMatMulOp struct {
	opkit.Base
	ta, tb    bool
	a, b, out tensor.Dtype
}

// checkDtypes accepts float32 and bfloat16 in any mix, or float64 throughout.
func (op mixedMatMulOp) checkDtypes() error {
	f64 := 0
	for _, dt := range []tensor.Dtype{op.a, op.b, op.out} {
		switch dt {
		case tensor.Float64:
			f64++
		case tensor.Float32, bfloat16.Dtype:
		default:
			return opkit.Errorf("MixedMatMul", "dtypes %v·%v → %v: want float32 or bfloat16 each, or float64 throughout", op.a, op.b, op.out)
		}
	}
	if f64 != 0 && f64 != 3 {
		return opkit.Errorf("MixedMatMul", "dtypes %v·%v → %v: float64 only throughout", op.a, op.b, op.out)
	}
	return nil
}

func (op mixedMatMulOp) Arity() int { return 2 }

func (op mixedMatMulOp) Type() hm.Type {
	return hm.NewFnType(G.TensorType{Dims: 2, Of: op.a}, G.TensorType{Dims: 2, Of: op.b}, G.TensorType{Dims: 2, Of: op.out})
}

func (op mixedMatMulOp) InferShape(ds ...G.DimSizer) (tensor.Shape, error) {
	return matMulOp{ta: op.ta, tb: op.tb}.InferShape(ds...)
}

func (op mixedMatMulOp) Do(vs ...G.Value) (G.Value, error) {
	const name = "MixedMatMul"
	if err := opkit.CheckArity(name, vs, 2); err != nil {
		return nil, err
	}
	if vs[0].Dtype() != op.a || vs[1].Dtype() != op.b {
		return nil, opkit.Errorf(name, "dtypes %v and %v, want %v and %v", vs[0].Dtype(), vs[1].Dtype(), op.a, op.b)
	}
	if _, err := op.InferShape(vs[0].Shape(), vs[1].Shape()); err != nil {
		return nil, err
	}
	if op.out == tensor.Float64 {
		return matMulOp{ta: op.ta, tb: op.tb}.Do(vs...)
	}
	dev, err := onDevice(name, vs...)
	if err != nil {
		return nil, err
	}
	if dev != nil {
		v, err := dev.SplitMatMul(vs[0], vs[1], op.ta, op.tb, op.out)
		return v, opkit.Wrap(name, err)
	}
	a, err := widen32(name, "a", vs[0])
	if err != nil {
		return nil, err
	}
	b, err := widen32(name, "b", vs[1])
	if err != nil {
		return nil, err
	}
	m, k := opDims(vs[0].Shape(), op.ta)
	_, n := opDims(vs[1].Shape(), op.tb)
	c := make([]float32, m*n)
	if err := kernels.Gemm(op.ta, op.tb, m, n, k, a, vs[0].Shape()[1], b, vs[1].Shape()[1], 0, c, n); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	if op.out == tensor.Float32 {
		return tensor.New(tensor.WithShape(m, n), tensor.WithBacking(c)), nil
	}
	h := make([]bfloat16.BFloat16, m*n)
	if err := bfloat16.FromFloat32s(h, c); err != nil {
		return nil, opkit.Wrap(name, err)
	}
	return tensor.New(tensor.Of(bfloat16.Dtype), tensor.WithShape(m, n), tensor.WithBacking(h)), nil
}

// widen32 returns the elements of the host matrix v (float32 or bfloat16) as float32s, row
// after row.
func widen32(name, what string, v G.Value) ([]float32, error) {
	d, err := gmmDense(name, what, v, tensor.Dtype{}, nil)
	if err != nil {
		return nil, err
	}
	switch x := d.Data().(type) {
	case []float32:
		return x, nil
	case []bfloat16.BFloat16:
		f := make([]float32, len(x))
		return f, opkit.Wrap(name, bfloat16.ToFloat32s(f, x))
	}
	return nil, opkit.Errorf(name, "%s holds %T, want float32 or bfloat16 data", what, d.Data())
}

func (op mixedMatMulOp) String() string {
	return fmt.Sprintf("op.MixedMatMul{ta=%v tb=%v a=%v b=%v out=%v}", op.ta, op.tb, op.a, op.b, op.out)
}
func (op mixedMatMulOp) WriteHash(h hash.Hash) { opkit.WriteHash(h, op) }
func (op mixedMatMulOp) Hashcode() uint32      { return opkit.Hashcode(op) }

func (op mixedMatMulOp) DiffWRT(int) []bool { return []bool{true, true} }

// gradOps returns the MixedMatMul ops of the two gradients (each with its input's dtype) and
// their forms (matMulGrads).
func (op mixedMatMulOp) gradOps() (daOp, dbOp G.Op, fa, fb gradForm) {
	fa, fb = matMulGrads(op.ta, op.tb)
	x, y := operands(fa, op.b, op.out)
	daOp = mixedMatMulOp{ta: fa.ta, tb: fa.tb, a: x, b: y, out: op.a}
	x, y = operands(fb, op.a, op.out)
	dbOp = mixedMatMulOp{ta: fb.ta, tb: fb.tb, a: x, b: y, out: op.b}
	return daOp, dbOp, fa, fb
}

// SymDiff of c = op(a)·op(b): MixedMatMul nodes for both gradients.
func (op mixedMatMulOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	daOp, dbOp, fa, fb := op.gradOps()
	return matMulSymDiff("MixedMatMul", inputs, grad, daOp, dbOp, fa, fb)
}

// DoDiff accumulates the gradients computed as SymDiff's ops do.
func (op mixedMatMulOp) DoDiff(ctx G.ExecutionContext, inputs G.Nodes, output *G.Node) error {
	daOp, dbOp, fa, fb := op.gradOps()
	return matMulDoDiff("MixedMatMul.DoDiff", inputs, output, daOp, dbOp, fa, fb)
}

var (
	_ G.SDOp = mixedMatMulOp{}
	_ G.ADOp = mixedMatMulOp{}
)
