package op

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/internal/opkit"
	"github.com/gomoe/gomoe/kernels"
)

// deviceKernels runs the ops' kernels on values that live in device memory. The default build
// registers none, so every op runs the CPU kernels on host values. The cuda build registers one
// from an init function (a file with the build tag `gomoecuda`), and each op's Do sends values that
// the registered backend Owns to it. Values are never copied between host and device silently:
// a mix of host and device inputs is an error.
//
// Every method allocates and returns its output(s) on the device, with the same shape, dtype
// and bits as the CPU kernel gives for the same inputs (see the rounding contracts in package
// kernels). plan is the flat int32 plan vector of geometry g (kernels.Geometry.View).
type deviceKernels interface {
	// Owns reports whether v lives in this backend's device memory.
	Owns(v G.Value) bool
	// BuildPlan builds the flat plan from ids [T,K] int32 (probs [T,K] only for DropByProb,
	// else nil).
	BuildPlan(g kernels.Geometry, ids, probs G.Value) (G.Value, error)
	// PermuteForward returns xp [R,H] from x [T,H].
	PermuteForward(g kernels.Geometry, x, plan G.Value) (G.Value, error)
	// PermuteBackward returns dx [T,H] from dxp [R,H].
	PermuteBackward(g kernels.Geometry, dxp, plan G.Value) (G.Value, error)
	// PermuteProbsForward returns pp [R] from probs [T,K].
	PermuteProbsForward(g kernels.Geometry, probs, plan G.Value) (G.Value, error)
	// PermuteProbsBackward returns dprobs [T,K] from dpp [R].
	PermuteProbsBackward(g kernels.Geometry, dpp, plan G.Value) (G.Value, error)
	// UnpermuteForward returns y [T,H] from yp [R,H] and probs [T,K] (nil: unweighted).
	UnpermuteForward(g kernels.Geometry, yp, probs, plan G.Value) (G.Value, error)
	// UnpermuteBackward returns dyp [R,H] (if wantRows) and dprobs [T,K] (if wantProbs) from
	// dy [T,H], yp [R,H] (needed for dprobs) and probs [T,K] (nil: unweighted forward).
	UnpermuteBackward(g kernels.Geometry, dy, yp, probs, plan G.Value, wantRows, wantProbs bool) (dyp, dprobs G.Value, err error)

	// GroupedMatMul returns z [R,N] = xp[seg e] · w[e] for xp [R,H], w [E,H,N] (pad rows 0).
	GroupedMatMul(g kernels.Geometry, xp, w, plan G.Value) (G.Value, error)
	// GroupedMatMulRowsGrad returns dxp [R,H] = dz[seg e] · w[e]ᵀ for dz [R,N] (pad rows 0).
	GroupedMatMulRowsGrad(g kernels.Geometry, dz, w, plan G.Value) (G.Value, error)
	// GroupedMatMulWeightsGrad returns dw [E,H,N] = xp[seg e]ᵀ · dz[seg e] (0 for an expert
	// with no rows); H is the rows' width.
	GroupedMatMulWeightsGrad(g kernels.Geometry, xp, dz, plan G.Value, H int) (G.Value, error)

	// Cast returns x converted to dtype to (float32 ↔ float64, float32 ↔ bfloat16).
	Cast(x G.Value, to tensor.Dtype) (G.Value, error)
	// TopK returns ids [T,K] int32 for scores [T,E] (bias [E] or nil) as topkOp does.
	TopK(scores, bias G.Value, k, groups, kept int) (G.Value, error)
	// GatherTopK returns out [T,K] = scores[t, ids[t,k]].
	GatherTopK(scores, ids G.Value) (G.Value, error)
	// GatherTopKGrad returns ds [T,E]: zero except ds[t, ids[t,k]] += g[t,k].
	GatherTopKGrad(g, ids G.Value, E int) (G.Value, error)

	// ScaleRows returns y [R,F] = x[r,c]·s[r] (s in x's probs dtype).
	ScaleRows(x, s G.Value) (G.Value, error)
	// RowDot returns out [R] = Σ_c a[r,c]·b[r,c] in a's probs dtype.
	RowDot(a, b G.Value) (G.Value, error)
	// Upload returns a step-scoped device copy of the host tensor h on like's device.
	Upload(like G.Value, h *tensor.Dense) (G.Value, error)
	// Download returns a host copy of the device value v (it waits for the device).
	Download(v G.Value) (*tensor.Dense, error)
	// Write copies the host tensor h into the device value dst of the same dtype and size.
	Write(dst G.Value, h *tensor.Dense) error

	// Pointwise runs the forward of an element-wise or row-wise op k (pointwise.go) on
	// device inputs and returns its device output.
	Pointwise(k pwKind, in ...G.Value) (G.Value, error)
	// PointwiseGrad returns the gradients of op k's inputs (nil where want[i] is false) from
	// the forward inputs, the forward output y and its gradient dy.
	PointwiseGrad(k pwKind, in []G.Value, y, dy G.Value, want []bool) ([]G.Value, error)
}

// device is the registered device backend, nil in the default build.
var device deviceKernels

// OnDevice reports whether v lives in GPU memory (of the gomoecuda build's device engine).
func OnDevice(v G.Value) bool { return device != nil && v != nil && device.Owns(v) }

// HostCopy returns a host copy of v: downloaded from the GPU (waiting for it) when v lives
// there, else a clone. It is how code outside a graph reads a device value (counts, a loss).
func HostCopy(v G.Value) (*tensor.Dense, error) {
	if v == nil {
		return nil, fmt.Errorf("gomoe: HostCopy of a nil value")
	}
	if OnDevice(v) {
		h, err := device.Download(v)
		return h, opkit.Wrap("HostCopy", err)
	}
	d, ok := v.(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("gomoe: HostCopy of a %T", v)
	}
	c, ok := d.Clone().(*tensor.Dense)
	if !ok {
		return nil, fmt.Errorf("gomoe: HostCopy: clone of a %T", d)
	}
	return c, nil
}

// WriteBack copies the host tensor h into dst (same dtype and size), uploading it when dst
// lives on the GPU.
func WriteBack(dst G.Value, h *tensor.Dense) error {
	if dst == nil || h == nil {
		return fmt.Errorf("gomoe: WriteBack: nil value")
	}
	if dst.Dtype() != h.Dtype() || dst.Shape().TotalSize() != h.Shape().TotalSize() {
		return fmt.Errorf("gomoe: WriteBack of %v %v into %v %v", h.Dtype(), h.Shape(), dst.Dtype(), dst.Shape())
	}
	if OnDevice(dst) {
		return opkit.Wrap("WriteBack", device.Write(dst, h))
	}
	d, ok := dst.(*tensor.Dense)
	if !ok || d.RequiresIterator() {
		return fmt.Errorf("gomoe: WriteBack into a %T view or non-dense value", dst)
	}
	return opkit.Wrap("WriteBack", tensor.Copy(d, h))
}
