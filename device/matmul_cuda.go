//go:build gomoecuda

package device

import (
	"fmt"

	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Matrix products on cuBLAS (tensor.MatMuler and tensor.MatVecMuler), so that Gorgonia's
// G.Mul of device matrices and its gradient run on the GPU.
//
// Gorgonia hands the engine a host output buffer for every matmul (its alloc instruction
// makes one with tensor.New): the engine "rebacks" it, pointing that *tensor.Dense at fresh
// step-scoped device memory, so the result stays on the device. Transposed operands arrive
// as views whose strides say so; the layout is read from the strides (never from
// DataOrder().IsTransposed(), which goes stale after Transpose).

// mmLayout is how a 2-D operand lies in memory: row-major with row stride ld, or (trans)
// the row-major transpose of a [cols,rows] matrix with row stride ld.
type mmLayout struct {
	trans bool
	ld    int
}

// mmLayoutOf reads the layout of a 2-D device tensor from its shape and strides: strides
// [cols,1] is row-major, [1,rows] is a transposed view; a dimension of size 1 may have any
// stride. Other layouts (for example a column slice) are an error.
func mmLayoutOf(what string, t *tensor.Dense) (mmLayout, error) {
	s, st := t.Shape(), t.Strides()
	if len(s) != 2 || len(st) != 2 {
		return mmLayout{}, fmt.Errorf("device: MatMul: %s has shape %v strides %v, want a matrix", what, s, st)
	}
	r, c := s[0], s[1]
	if r < 1 || c < 1 {
		return mmLayout{}, fmt.Errorf("device: MatMul: %s has shape %v", what, s)
	}
	switch {
	case (c == 1 || st[1] == 1) && (r == 1 || st[0] == c):
		return mmLayout{ld: c}, nil
	case (r == 1 || st[0] == 1) && (c == 1 || st[1] == r):
		return mmLayout{trans: true, ld: r}, nil
	}
	return mmLayout{}, fmt.Errorf("device: MatMul: %s has shape %v and strides %v: neither row-major nor a transposed view; materialize it first", what, s, st)
}

// mmOperand checks that t is a dense tensor of e of dtype dt holding at least n elements.
func (e *Engine) mmOperand(what string, t tensor.Tensor, dt tensor.Dtype, n int) (*tensor.Dense, error) {
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil {
		return nil, fmt.Errorf("device: MatMul: %s is a %T, want a *tensor.Dense", what, t)
	}
	if !e.Owns(d) {
		return nil, fmt.Errorf("device: MatMul: %s is not on this engine's GPU (copy it in first)", what)
	}
	if d.Dtype() != dt {
		return nil, fmt.Errorf("device: MatMul: %s has dtype %v, want %v", what, d.Dtype(), dt)
	}
	if int64(d.MemSize()) < int64(n)*int64(dt.Size()) {
		return nil, fmt.Errorf("device: MatMul: %s holds %d bytes, want %d elements", what, d.MemSize(), n)
	}
	return d, nil
}

// mmOutput returns prealloc as a contiguous device tensor of dtype dt and shape want: a host
// tensor (Gorgonia's alloc) is rebacked with step-scoped device memory; its old contents are
// not kept (the product overwrites them).
func (e *Engine) mmOutput(t tensor.Tensor, dt tensor.Dtype, want tensor.Shape) (*tensor.Dense, error) {
	d, ok := t.(*tensor.Dense)
	if !ok || d == nil {
		return nil, fmt.Errorf("device: MatMul: output is a %T, want a *tensor.Dense", t)
	}
	if d.Dtype() != dt {
		return nil, fmt.Errorf("device: MatMul: output has dtype %v, want %v", d.Dtype(), dt)
	}
	okShape := d.Shape().Eq(want)
	if want.Dims() == 1 {
		okShape = d.Shape().TotalSize() == want.TotalSize() && d.Shape().IsVector()
	}
	if !okShape {
		return nil, fmt.Errorf("device: MatMul: output has shape %v, want %v", d.Shape(), want)
	}
	if d.IsView() || d.RequiresIterator() {
		return nil, fmt.Errorf("device: MatMul: output is a view; want a contiguous tensor")
	}
	if d.Dims() == 2 {
		if l, err := mmLayoutOf("output", d); err != nil || l.trans {
			return nil, fmt.Errorf("device: MatMul: output has shape %v strides %v, want row-major", d.Shape(), d.Strides())
		}
	}
	size := int64(want.TotalSize()) * int64(dt.Size())
	if e.Owns(d) {
		if int64(d.MemSize()) < size {
			return nil, fmt.Errorf("device: MatMul: output holds %d bytes, want %d", d.MemSize(), size)
		}
		return d, nil
	}
	if o := e.otherEngine(d.Uintptr()); o != nil {
		return nil, fmt.Errorf("device: MatMul: output is device memory of another engine (%v), not of this one or the host", o)
	}
	p, err := e.pool.Alloc(size, false)
	if err != nil {
		return nil, err
	}
	tensor.FromMemory(p, uintptr(size))(d)
	tensor.WithEngine(e)(d)
	return d, nil
}

// MatMul writes prealloc [m,n] = a [m,k] · b [k,n] for device matrices of one dtype (float32
// and bfloat16 accumulate in float32, float64 in float64). a and b may be transposed views;
// a host prealloc is rebacked with step-scoped device memory (see the file comment).
func (e *Engine) MatMul(a, b, prealloc tensor.Tensor) error {
	if err := e.ok(); err != nil {
		return err
	}
	if a == nil || b == nil || prealloc == nil {
		return fmt.Errorf("device: MatMul: nil operand")
	}
	dt := a.Dtype()
	kd, err := DType(dt)
	if err != nil {
		return err
	}
	as, bs := a.Shape(), b.Shape()
	if len(as) != 2 || len(bs) != 2 || as[1] != bs[0] {
		return fmt.Errorf("device: MatMul: shapes %v and %v do not multiply", as, bs)
	}
	m, k, n := as[0], as[1], bs[1]
	ad, err := e.mmOperand("a", a, dt, m*k)
	if err != nil {
		return err
	}
	bd, err := e.mmOperand("b", b, dt, k*n)
	if err != nil {
		return err
	}
	la, err := mmLayoutOf("a", ad)
	if err != nil {
		return err
	}
	lb, err := mmLayoutOf("b", bd)
	if err != nil {
		return err
	}
	out, err := e.mmOutput(prealloc, dt, tensor.Shape{m, n})
	if err != nil {
		return err
	}
	return e.k.Gemm(kd, la.trans, lb.trans, m, n, k, 1, cu.DevicePtr(ad.Uintptr()), la.ld,
		cu.DevicePtr(bd.Uintptr()), lb.ld, 0, cu.DevicePtr(out.Uintptr()), n)
}

// MatVecMul writes prealloc [m] = a [m,n] · b [n] for a device matrix (possibly a transposed
// view) and a contiguous device vector of one dtype, on cuBLAS.
func (e *Engine) MatVecMul(a, b, prealloc tensor.Tensor) error {
	if err := e.ok(); err != nil {
		return err
	}
	if a == nil || b == nil || prealloc == nil {
		return fmt.Errorf("device: MatVecMul: nil operand")
	}
	dt := a.Dtype()
	kd, err := DType(dt)
	if err != nil {
		return err
	}
	as := a.Shape()
	if len(as) != 2 || !b.Shape().IsVector() || b.Shape().TotalSize() != as[1] {
		return fmt.Errorf("device: MatVecMul: shapes %v and %v do not multiply", as, b.Shape())
	}
	m, k := as[0], as[1]
	ad, err := e.mmOperand("a", a, dt, m*k)
	if err != nil {
		return err
	}
	bd, err := e.mmOperand("b", b, dt, k)
	if err != nil {
		return err
	}
	if bd.RequiresIterator() {
		return fmt.Errorf("device: MatVecMul: b is a strided view; materialize it first")
	}
	la, err := mmLayoutOf("a", ad)
	if err != nil {
		return err
	}
	out, err := e.mmOutput(prealloc, dt, tensor.Shape{m})
	if err != nil {
		return err
	}
	// y [m,1] = op(A) [m,k] · x [k,1], all row-major with unit row strides for the vectors.
	return e.k.Gemm(kd, la.trans, false, m, 1, k, 1, cu.DevicePtr(ad.Uintptr()), la.ld,
		cu.DevicePtr(bd.Uintptr()), 1, 0, cu.DevicePtr(out.Uintptr()), 1)
}

func (cudaBackend) SplitMatMul(a, b G.Value, ta, tb bool, out tensor.Dtype) (G.Value, error) {
	e, err := devOf(a, b)
	if err != nil {
		return nil, err
	}
	var kd [3]kernels.DType
	for i, dt := range []tensor.Dtype{a.Dtype(), b.Dtype(), out} {
		if kd[i], err = DType(dt); err != nil {
			return nil, err
		}
	}
	as, bs := a.Shape(), b.Shape()
	if as.Dims() != 2 || bs.Dims() != 2 {
		return nil, fmt.Errorf("SplitMatMul: a %v and b %v, want matrices", as, bs)
	}
	if err := contiguous("a", a); err != nil {
		return nil, err
	}
	if err := contiguous("b", b); err != nil {
		return nil, err
	}
	m, k := as[0], as[1]
	if ta {
		m, k = k, m
	}
	k2, n := bs[0], bs[1]
	if tb {
		k2, n = n, k2
	}
	if k != k2 {
		return nil, fmt.Errorf("SplitMatMul: op(a) [%d,%d] times op(b) [%d,%d]: inner sizes differ", m, k, k2, n)
	}
	need, err := kernels.SplitGemmScratch(m, n, k, kd[0], kd[1], kd[2])
	if err != nil {
		return nil, err
	}
	c, err := e.NewStepTensor(out, m, n)
	if err != nil {
		return nil, err
	}
	err = scratch(e, max((need+7)/8, 1), func(s cu.DevicePtr) error {
		return e.Kernels().SplitGemm(ta, tb, m, n, k, dptr(a), kd[0], dptr(b), kd[1], dptr(c), kd[2], s, need)
	})
	if err != nil {
		_ = e.Release(c)
		return nil, err
	}
	return c, nil
}

var (
	_ tensor.MatMuler    = (*Engine)(nil)
	_ tensor.MatVecMuler = (*Engine)(nil)
)
