package device

import (
	"fmt"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/kernels"
)

// Backend runs gomoe's work on values that live in device memory: the kernels of package op's
// ops, the optimizer updates of package train and the row moves of package ep. It is the one
// contract between those packages and a device; Of finds the backend of some values. This file
// has no build tag, so the default build type-checks every caller against it; the gomoecuda
// build implements it on the Engine's memory (backend_cuda.go and its siblings), and the
// default build has no implementation of its own (Of returns nil, except for a BackendEngine's
// values, which tests use for fake devices).
//
// Every method that returns a value allocates it on the device of its inputs, as a step-scoped
// tensor (returned to the engine's cache by EndStep) unless it says otherwise, with the same
// shape, dtype and bits as the CPU kernel gives for the same inputs (see the rounding contracts
// in package kernels). Nothing waits for the device unless it says so. Values are never copied
// between host and device silently: callers check that every input is owned first.
type Backend interface {
	// Owns reports whether v lives in this backend's device memory.
	Owns(v G.Value) bool

	// Upload returns a step-scoped device copy of the host tensor h on like's device.
	Upload(like G.Value, h *tensor.Dense) (G.Value, error)
	// Download returns a host copy of the device value v (it waits for the device).
	Download(v G.Value) (*tensor.Dense, error)
	// DownloadChecked is Download that also reports what the device kernels flagged as bad
	// input (an expert id out of range, a NaN score: kernels.StatusError) before the copy.
	DownloadChecked(v G.Value) (*tensor.Dense, error)
	// Write copies the host tensor h into the device value dst of the same dtype and size.
	Write(dst G.Value, h *tensor.Dense) error
	// StepZeros returns a zeroed step-scoped device tensor of dtype dt and the given shape on
	// the device of like.
	StepZeros(like G.Value, dt tensor.Dtype, shape ...int) (G.Value, error)
	// Add adds src into dst on the device (dst += src).
	Add(dst, src G.Value) error
	// EndStep recycles the step memory of the engine holding v.
	EndStep(v G.Value)
	// Scalar copies the one-element device value v to the host (it waits for the device).
	Scalar(v G.Value) (float64, error)

	// BuildPlan builds the flat plan (kernels.Geometry.View) from ids [T,K] int32 (probs [T,K]
	// only for DropByProb, else nil).
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

	// SplitMatMul returns op(a)·op(b) as a new [M,N] tensor of dtype out (float32 or
	// bfloat16), where a and b are row-major matrices of float32 or bfloat16 each and op(x) is
	// x, or xᵀ where ta (tb) is set. It computes to float32 accuracy on bfloat16 tensor cores
	// (kernels.CUDA.SplitGemm), not with the CPU's bits: op.MixedMatMul.
	SplitMatMul(a, b G.Value, ta, tb bool, out tensor.Dtype) (G.Value, error)

	// Cast returns x converted to dtype to (float32 ↔ float64, float32 ↔ bfloat16).
	Cast(x G.Value, to tensor.Dtype) (G.Value, error)
	// TopK returns ids [T,K] int32 for scores [T,E] (bias [E] or nil), k experts per token
	// chosen from the best kept of groups expert groups (op.TopK).
	TopK(scores, bias G.Value, k, groups, kept int) (G.Value, error)
	// GatherTopK returns out [T,K] = scores[t, ids[t,k]].
	GatherTopK(scores, ids G.Value) (G.Value, error)
	// GatherTopKGrad returns ds [T,E]: zero except ds[t, ids[t,k]] += g[t,k].
	GatherTopKGrad(g, ids G.Value, E int) (G.Value, error)
	// RouterTopK returns ids [T,K] int32 for logits [T,E] (bias [E] or nil), the fused
	// router's selection (kernels.RouterTopK).
	RouterTopK(logits, bias G.Value, k int, r kernels.Router) (G.Value, error)
	// RouterProbs returns probs [T,K] for logits [T,E] and ids [T,K] (kernels.RouterProbs).
	RouterProbs(logits, ids G.Value, r kernels.Router) (G.Value, error)
	// RouterProbsGrad returns dlogits [T,E] from dprobs [T,K] (kernels.RouterProbsBackward).
	RouterProbsGrad(logits, ids, dprobs G.Value, r kernels.Router) (G.Value, error)
	// ScaleRows returns y [R,F] = x[r,c]·s[r] (s in x's probs dtype).
	ScaleRows(x, s G.Value) (G.Value, error)
	// RowDot returns out [R] = Σ_c a[r,c]·b[r,c] in a's probs dtype.
	RowDot(a, b G.Value) (G.Value, error)
	// Pointwise runs the forward of the element-wise or row-wise op k on device inputs and
	// returns its device output.
	Pointwise(k Pointwise, in ...G.Value) (G.Value, error)
	// PointwiseGrad returns the gradients of op k's inputs (nil where want[i] is false) from
	// the forward inputs, the forward output y and its gradient dy.
	PointwiseGrad(k Pointwise, in []G.Value, y, dy G.Value, want []bool) ([]G.Value, error)

	// The routing losses (op.BalanceLoss, op.ZLoss). A loss is returned as a device tensor of
	// scalar shape (one element, no dims), so that the forward never waits for the device. A
	// gradient method takes the output gradient either as such a device scalar (dy != nil) or,
	// with dy == nil, as the host number dyv (gorgonia seeds a cost's gradient with a host
	// constant).

	// BalanceLoss returns scale·Σ_b Σ_e N[b,e]·Σ_{t in b} s[t,e] for ids [T,K] int32 and
	// scores [T,E] (seqs sequences), with scores' dtype, as kernels.BalanceLossForward. With
	// score kernels.RouterSoftmax or kernels.RouterSigmoid, x holds the router's logits and s
	// is computed from them (kernels.RouterBalanceLossForward); with score 0, x is s.
	BalanceLoss(ids, x G.Value, experts, topK, seqs int, scale float64, score kernels.RouterScore) (G.Value, error)
	// BalanceLossGrad returns, with score 0, ds [T,E] of dtype dt: (scale·dy)·N[b(t),e] (x is
	// not read and may be nil); with a score function, the gradient [T,E] with respect to the
	// logits x (kernels.RouterBalanceLossBackward).
	BalanceLossGrad(ids, x G.Value, dt tensor.Dtype, experts, topK, seqs int, scale float64, dy G.Value, dyv float64, score kernels.RouterScore) (G.Value, error)
	// ZLoss returns scale·Σ_t lse(logits[t])² for logits [T,E], with logits' dtype.
	ZLoss(logits G.Value, scale float64) (G.Value, error)
	// ZLossGrad returns dlogits [T,E] = (2·scale·dy)·lse(t)·softmax(logits[t]).
	ZLossGrad(logits G.Value, scale float64, dy G.Value, dyv float64) (G.Value, error)

	// The building blocks of the examples' models (package kernels: bias.go, relu.go,
	// rmsnorm.go, cross_entropy.go, embedding.go).

	// BiasAdd returns y [N,D] = x [N,D] + b [D] (b broadcast over the rows).
	BiasAdd(x, b G.Value) (G.Value, error)
	// ColSum returns out [D] = Σ_rows x [N,D].
	ColSum(x G.Value) (G.Value, error)
	// ReLU returns max(x, 0).
	ReLU(x G.Value) (G.Value, error)
	// ReLUGrad returns dy where x > 0, else 0.
	ReLUGrad(x, dy G.Value) (G.Value, error)
	// RMSNorm returns x [N,D] / sqrt(mean_row(x²) + eps) · gain [D].
	RMSNorm(x, gain G.Value, eps float64) (G.Value, error)
	// RMSNormGrad returns the gradient of input which (0: x [N,D], 1: gain [D]) from dy [N,D].
	RMSNormGrad(x, gain, dy G.Value, eps float64, which int) (G.Value, error)
	// CrossEntropy returns the mean softmax cross-entropy of logits [N,C] against target
	// [N,C] as a 0-d device tensor (one element).
	CrossEntropy(logits, target G.Value) (G.Value, error)
	// CrossEntropyGrad returns dlogits [N,C] = g·scale·(softmax(logits) − target), where g is
	// the one-element device value dy, or 1 when dy is nil (the host loss gradient is then
	// folded into scale).
	CrossEntropyGrad(logits, target, dy G.Value, scale float64) (G.Value, error)
	// Embedding returns out [N,D] = table [V,D] rows ids [N] int32.
	Embedding(table, ids G.Value) (G.Value, error)
	// EmbeddingGrad returns dtable [V,D] from dy [N,D] and ids.
	EmbeddingGrad(dy, ids G.Value, V int) (G.Value, error)

	// The optimizers of package train. Their state (st, m, v, w32) is what Zeros or Master
	// returned.

	// Same returns an error unless a and b live on the same device.
	Same(a, b *tensor.Dense) error
	// Zeros returns a persistent zeroed device tensor of w's size and dtype dt, on w's device.
	Zeros(w *tensor.Dense, dt tensor.Dtype) (any, error)
	// Master returns a persistent float32 copy of the bfloat16 device weight w.
	Master(w *tensor.Dense) (any, error)
	// Matches reports whether st (from Zeros or Master) still fits w with dtype dt.
	Matches(st any, w *tensor.Dense, dt tensor.Dtype) bool
	// Release frees st (from Zeros or Master).
	Release(st any)
	// Adam launches the Adam update of w from its gradient g (w32: the float32 master of a
	// bfloat16 w, else nil). With sc (from Scalars) not nil the kernel reads lr, b1, b2, eps,
	// c1, c2 and wd from it instead.
	Adam(w, g *tensor.Dense, w32, m, v any, lr, b1, b2, eps, c1, c2, wd float64, sc any) error
	// SGD launches the SGD update of w from its gradient g (w32 as in Adam; sc as in Adam,
	// holding lr and wd).
	SGD(w, g *tensor.Dense, w32 any, lr, wd float64, sc any) error
	// Scalars returns a persistent device buffer of n float64s on w's device (free it with
	// Release): an optimiser's scalars for steps replayed from a CUDA graph.
	Scalars(w *tensor.Dense, n int) (any, error)
	// SetScalars copies vals into sc (from Scalars), in order with the device work.
	SetScalars(sc any, vals []float64) error
	// Capture runs f with the device work of like's engine captured into a graph instead of
	// running (device.Engine.Capture).
	Capture(like G.Value, f func() error) (Graph, error)
	// SumSquares returns Σ g² of each device tensor of gs: rows of 1024 elements summed in
	// float64 (the squares of float32 and bfloat16 elements too: kernels.CUDA.SquareRows), the
	// row sums added in float64 on the device in a fixed order
	// (kernels.CUDA.SumReduce). It waits for the device once per GPU the tensors are on (one copy
	// of all their sums to the host), not once per tensor.
	SumSquares(gs []*tensor.Dense) ([]float64, error)
	// ClipGrads clips the gradients gs (on one device) by their global L2 norm without waiting
	// for the device, to the max norm st[at+3] in the optimiser's scalars st (from Scalars;
	// 0: no clipping): each gradient's Σ g² as SumSquares computes it, their sum in order, and
	// st[at] = skip, st[at+1] = norm, st[at+2] = scale (kernels.CUDA.ClipFinish); each gradient is
	// multiplied by the scale when it is below 1 (kernels.CUDA.ScaleBy), with the bits of
	// SumSquares, the host's norm and Scale.
	ClipGrads(gs []*tensor.Dense, st any, at int) error
	// Scale multiplies g by s in place (gradient clipping).
	Scale(g *tensor.Dense, s float64) error
}

// A Pointwise names an element-wise or row-wise op (package op's SwiGLU, SwiGLUPacked, GELU,
// Sigmoid, Softmax, RowNormalize) for Backend.Pointwise and Backend.PointwiseGrad.
type Pointwise struct {
	// Name is the op's name, for errors.
	Name string
	// Arity is the number of inputs.
	Arity int
	// Row is true for a row-wise op (RowOp on the rows of a matrix), false for an
	// element-wise one (Activation).
	Row bool
	// Activation is the element-wise op's kernel.
	Activation kernels.Activation
	// RowOp is the row-wise op's kernel.
	RowOp kernels.RowOp
	// Packed is true for SwiGLU on the two halves of each row of one input z [R,2F]
	// (package op's SwiGLUPacked): the forward returns [R,F]; the gradient takes in = [z],
	// no y, and dy [R,F], and returns dz [R,2F].
	Packed bool
}

// String is the op's name.
func (k Pointwise) String() string {
	if k.Name == "" {
		return fmt.Sprintf("Pointwise%+v", struct {
			Arity int
			Row   bool
		}{k.Arity, k.Row})
	}
	return k.Name
}

// A BackendEngine is a tensor.Engine whose tensors a Backend of its own runs on: Of returns
// Backend() for a tensor whose Engine() it is, when that backend owns it. Package device's
// Engine does not need it (Of finds its tensors by address); it is how tests plug in a fake
// device, without any global state.
type BackendEngine interface {
	tensor.Engine
	// Backend returns the engine's backend.
	Backend() Backend
}

// Of returns the backend that holds the first device value among vs (nil ones are skipped),
// or nil when none lives in device memory: always nil in the default build, except for the
// values of a BackendEngine. It does not check the other values: a caller that needs every
// value on the device asks the backend's Owns about each.
func Of(vs ...G.Value) Backend {
	for _, v := range vs {
		t, ok := v.(tensor.Tensor)
		if !ok || t == nil {
			continue
		}
		if d, ok := t.(*tensor.Dense); ok && d == nil {
			continue
		}
		if e, ok := t.Engine().(BackendEngine); ok {
			if b := e.Backend(); b != nil && b.Owns(v) {
				return b
			}
		}
		if b := engineBackend(t); b != nil {
			return b
		}
	}
	return nil
}

// Graph is device work captured once and replayed (device.Engine.Capture in the gomoecuda
// build).
type Graph interface {
	// Replay enqueues one run of the captured work and returns without waiting.
	Replay() error
	// Nodes is the number of device operations in the graph.
	Nodes() int
	// Close destroys the graph and frees the memory its work allocated.
	Close() error
}
