//go:build gomoecuda

package device

import (
	"fmt"

	"gorgonia.org/cu"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// The optimizer methods of cudaBackend (package train's updates of weights held by an Engine,
// with the kernels of package kernels), its step and scalar methods, and SumSquares and Scale
// for gradient clipping.

// trainEngine returns the engine that holds v, or nil.
func trainEngine(v G.Value) *Engine {
	t, ok := v.(tensor.Tensor)
	if !ok {
		return nil
	}
	return Lookup(t)
}

func (cudaBackend) Same(a, b *tensor.Dense) error {
	if trainEngine(a) != trainEngine(b) {
		return fmt.Errorf("the weight and its gradient are on different GPUs")
	}
	return nil
}

func (cudaBackend) Zeros(w *tensor.Dense, dt tensor.Dtype) (any, error) {
	e := trainEngine(w)
	if e == nil {
		return nil, fmt.Errorf("the weight is not in GPU memory")
	}
	return e.NewTensor(dt, w.Shape().Clone()...)
}

func (g cudaBackend) Master(w *tensor.Dense) (any, error) {
	e := trainEngine(w)
	if e == nil {
		return nil, fmt.Errorf("the weight is not in GPU memory")
	}
	m, err := e.NewTensor(tensor.Float32, w.Shape().Clone()...)
	if err != nil {
		return nil, err
	}
	if err := e.Kernels().Convert(kernels.BF16, kernels.F32, densePtr(m), densePtr(w), int64(w.Shape().TotalSize())); err != nil {
		_ = e.Release(m)
		return nil, err
	}
	return m, nil
}

func (cudaBackend) Matches(st any, w *tensor.Dense, dt tensor.Dtype) bool {
	d, ok := st.(*tensor.Dense)
	return ok && trainEngine(d) == trainEngine(w) && d.Dtype() == dt && d.Shape().TotalSize() == w.Shape().TotalSize()
}

func (cudaBackend) Release(st any) {
	if d, ok := st.(*tensor.Dense); ok {
		if e := trainEngine(d); e != nil {
			_ = e.Release(d)
		}
	}
}

// densePtr is the device address of t's data.
func densePtr(t *tensor.Dense) cu.DevicePtr { return cu.DevicePtr(t.Uintptr()) }

func (cudaBackend) Adam(w, g *tensor.Dense, w32, m, v any, lr, b1, b2, eps, c1, c2, wd float64, sc any) error {
	e := trainEngine(w)
	dt, err := DType(w.Dtype())
	if err != nil {
		return err
	}
	md, vd := m.(*tensor.Dense), v.(*tensor.Dense)
	n := int64(w.Shape().TotalSize())
	scp, err := scalarsPtr(sc, 8)
	if err != nil {
		return err
	}
	if dt == kernels.BF16 {
		return e.Kernels().AdamUpdateBF16(densePtr(w), densePtr(g), densePtr(w32.(*tensor.Dense)), densePtr(md), densePtr(vd), n, lr, b1, b2, eps, c1, c2, wd, scp)
	}
	return e.Kernels().AdamUpdate(dt, densePtr(w), densePtr(g), densePtr(md), densePtr(vd), n, lr, b1, b2, eps, c1, c2, wd, scp)
}

func (cudaBackend) SGD(w, g *tensor.Dense, w32 any, lr, wd float64, sc any) error {
	e := trainEngine(w)
	dt, err := DType(w.Dtype())
	if err != nil {
		return err
	}
	n := int64(w.Shape().TotalSize())
	scp, err := scalarsPtr(sc, 3)
	if err != nil {
		return err
	}
	if dt == kernels.BF16 {
		return e.Kernels().SGDUpdateBF16(densePtr(w), densePtr(g), densePtr(w32.(*tensor.Dense)), n, lr, wd, scp)
	}
	return e.Kernels().SGDUpdate(dt, densePtr(w), densePtr(g), n, lr, wd, scp)
}

// scalarsPtr is the device address of an optimiser's scalars (from Scalars), 0 for nil; the
// kernels read the first want float64s (the solver's scalars and the skip flag).
func scalarsPtr(sc any, want int) (cu.DevicePtr, error) {
	if sc == nil {
		return 0, nil
	}
	d, ok := sc.(*tensor.Dense)
	if !ok || d == nil || d.Dtype() != tensor.Float64 || d.Shape().TotalSize() < want {
		return 0, fmt.Errorf("gomoe: train: optimiser scalars %v, want at least %d float64s in GPU memory", sc, want)
	}
	return densePtr(d), nil
}

func (cudaBackend) Scalars(w *tensor.Dense, n int) (any, error) {
	e := trainEngine(w)
	if e == nil {
		return nil, fmt.Errorf("gomoe: train: Scalars: weight is not in GPU memory")
	}
	return e.NewTensor(tensor.Float64, n)
}

func (cudaBackend) SetScalars(sc any, vals []float64) error {
	d, ok := sc.(*tensor.Dense)
	if !ok || d.Shape().TotalSize() != len(vals) {
		return fmt.Errorf("gomoe: train: SetScalars: %d values into %v", len(vals), sc)
	}
	e := trainEngine(d)
	if e == nil {
		return fmt.Errorf("gomoe: train: SetScalars: buffer is not in GPU memory")
	}
	return e.Upload(d, tensor.New(tensor.WithShape(len(vals)), tensor.WithBacking(vals)))
}

func (cudaBackend) Capture(like G.Value, f func() error) (Graph, error) {
	e := trainEngine(like)
	if e == nil {
		return nil, fmt.Errorf("gomoe: Capture: value is not in GPU memory")
	}
	g, err := e.Capture(f)
	if err != nil {
		return nil, err
	}
	return g, nil
}

func (cudaBackend) EndStep(v G.Value) {
	if e := trainEngine(v); e != nil {
		e.EndStep()
	}
}

func (cudaBackend) Scalar(v G.Value) (float64, error) {
	e := trainEngine(v)
	if e == nil {
		return 0, fmt.Errorf("gomoe: train: Scalar: value is not in GPU memory")
	}
	h, err := e.CopyOut(v.(tensor.Tensor))
	if err != nil {
		return 0, err
	}
	switch x := h.Data().(type) {
	case []float32:
		return float64(x[0]), nil
	case []float64:
		return x[0], nil
	case float32:
		return float64(x), nil
	case float64:
		return x, nil
	}
	return 0, fmt.Errorf("gomoe: train: Scalar of dtype %v", h.Dtype())
}

// sumSquaresCols is the row length of the RowDot view of a gradient in SumSquares.
const sumSquaresCols = 1024

// SumSquares views each g of gs as rows of up to 1024 elements (a last shorter row for the
// rest), sums each row's squares (one warp per row, in float64: kernels.CUDA.SquareRows for
// float32 and bfloat16, RowDot for float64) and adds the row sums in float64 on the device
// (kernels.CUDA.SumReduce), into one float64 per tensor; then one copy per GPU brings those
// sums to the host.
func (cudaBackend) SumSquares(gs []*tensor.Dense) ([]float64, error) {
	out := make([]float64, len(gs))
	type group struct {
		e   *Engine
		idx []int
	}
	var groups []group
	for i, g := range gs {
		e := trainEngine(g)
		if e == nil {
			return nil, fmt.Errorf("tensor %d of %d is not in GPU memory", i, len(gs))
		}
		j := 0
		for j < len(groups) && groups[j].e != e {
			j++
		}
		if j == len(groups) {
			groups = append(groups, group{e: e})
		}
		groups[j].idx = append(groups[j].idx, i)
	}
	for _, gr := range groups {
		sums, err := gr.e.NewStepTensor(tensor.Float64, len(gr.idx))
		if err != nil {
			return nil, err
		}
		sub := make([]*tensor.Dense, len(gr.idx))
		for j, i := range gr.idx {
			sub[j] = gs[i]
		}
		if err := sumsSquaresInto(gr.e, densePtr(sums), sub); err != nil {
			return nil, err
		}
		h, err := gr.e.CopyOut(sums)
		if err != nil {
			return nil, err
		}
		for j, i := range gr.idx {
			out[i] = h.Float64s()[j]
		}
	}
	return out, nil
}

// sumsSquaresInto writes Σ g² of each g of gs (float64, in order) to out[0..len(gs)) on the
// device (sumSquaresInto each).
func sumsSquaresInto(e *Engine, out cu.DevicePtr, gs []*tensor.Dense) error {
	for i, g := range gs {
		if err := sumSquaresInto(e, out+cu.DevicePtr(8*i), g); err != nil {
			return err
		}
	}
	return nil
}

// sumSquaresInto writes Σ g² (float64) to out on the device: row sums of 1024 elements in
// float64 (SquareRows; RowDot for float64 gradients), added by kernels.CUDA.SumReduce.
func sumSquaresInto(e *Engine, out cu.DevicePtr, g *tensor.Dense) error {
	dt, err := DType(g.Dtype())
	if err != nil {
		return err
	}
	k := e.Kernels()
	n := int64(g.Shape().TotalSize())
	if n == 0 { // no rows: SumReduce writes 0
		return k.SumReduce(kernels.F32, out, 0, 0)
	}
	cols := int64(sumSquaresCols)
	if n < cols {
		cols = n
	}
	rows, tail := n/cols, n%cols
	nr := rows
	if tail > 0 {
		nr++
	}
	sums, err := e.NewStepTensor(tensor.Float64, int(nr))
	if err != nil {
		return err
	}
	// Row sums in float64: float32 ones overflowed from an element of about 1.8·10¹⁹.
	square := func(sum, at cu.DevicePtr, rows, cols int64) error {
		if dt == kernels.F64 {
			return k.RowDot(dt, sum, at, at, rows, int(cols))
		}
		return k.SquareRows(dt, sum, at, rows, int(cols))
	}
	if err := square(densePtr(sums), densePtr(g), rows, cols); err != nil {
		return err
	}
	if tail > 0 {
		off := cu.DevicePtr(uintptr(rows*cols) * uintptr(dt.Size()))
		if err := square(densePtr(sums)+cu.DevicePtr(8*uintptr(rows)), densePtr(g)+off, 1, tail); err != nil {
			return err
		}
	}
	return k.SumReduce(kernels.F64, out, densePtr(sums), nr)
}

func (cudaBackend) ClipGrads(gs []*tensor.Dense, st any, at int) error {
	sd, ok := st.(*tensor.Dense)
	if !ok || sd == nil || sd.Dtype() != tensor.Float64 || at < 0 || at+4 > sd.Shape().TotalSize() {
		return fmt.Errorf("gomoe: train: ClipGrads: scalars %v, want float64 with room for 4 at %d", st, at)
	}
	if len(gs) == 0 {
		return fmt.Errorf("gomoe: train: ClipGrads: no gradients")
	}
	e := trainEngine(gs[0])
	if e == nil || trainEngine(sd) != e {
		return fmt.Errorf("gomoe: train: ClipGrads: the gradients and scalars are not in one GPU's memory")
	}
	for _, g := range gs {
		if trainEngine(g) != e {
			return fmt.Errorf("gomoe: train: ClipGrads: a gradient is not in the first one's GPU memory")
		}
	}
	sums, err := e.NewStepTensor(tensor.Float64, len(gs))
	if err != nil {
		return err
	}
	if err := sumsSquaresInto(e, densePtr(sums), gs); err != nil {
		return err
	}
	k := e.Kernels()
	sp := densePtr(sd) + cu.DevicePtr(8*at)
	if err := k.ClipFinish(sp, densePtr(sums), len(gs)); err != nil {
		return err
	}
	for _, g := range gs {
		dt, err := DType(g.Dtype())
		if err != nil {
			return err
		}
		if err := k.ScaleBy(dt, densePtr(g), sp, int64(g.Shape().TotalSize())); err != nil {
			return err
		}
	}
	return nil
}

// Scale multiplies g by s in place with the engine's element-wise kernel (kernels.CUDA.Binary:
// computed in the accumulator type and rounded once, as the CPU's scaleGrad).
func (cudaBackend) Scale(g *tensor.Dense, s float64) error {
	e := trainEngine(g)
	if e == nil {
		return fmt.Errorf("the gradient is not in GPU memory")
	}
	dt, err := DType(g.Dtype())
	if err != nil {
		return err
	}
	return e.Kernels().Binary(dt, kernels.OpMul, densePtr(g), densePtr(g), 0, s, int64(g.Shape().TotalSize()))
}
