package moe

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"strings"

	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/internal/hostmem"
	"github.com/gomoe/gomoe/kernels"
)

// ScoreFunc is the router's score function.
type ScoreFunc int

const (
	// Softmax scores: probs are a softmax of the router logits (see Config.PreSoftmax).
	Softmax ScoreFunc = iota
	// Sigmoid scores: s = σ(logits); the K chosen scores are renormalised to sum to 1 when
	// K > 1 (DeepSeek-V3).
	Sigmoid
)

// String returns "softmax" or "sigmoid".
func (s ScoreFunc) String() string {
	switch s {
	case Softmax:
		return "softmax"
	case Sigmoid:
		return "sigmoid"
	}
	return fmt.Sprintf("ScoreFunc(%d)", int(s))
}

// Activation is the routed (and shared) experts' FFN type: kernels.Activation, gomoe's one
// activation type. A Config takes SwiGLU or GELU; its zero Activation is SwiGLU.
type Activation = kernels.Activation

const (
	// SwiGLU experts: y = (silu(x·Wg) ⊙ (x·Wu))·W2 with the gate and up projections Wg, Wu
	// [H,F] side by side as one W1 = [Wg | Wu] [H,2F], and W2 [F,H] (kernels.SwiGLU; the
	// default).
	SwiGLU = kernels.SwiGLU
	// GELU experts: y = gelu(x·W1)·W2 (tanh approximation of GELU; kernels.GELU).
	GELU = kernels.GELU
)

// DropPolicy chooses which tokens an over-full expert drops in capacity mode:
// kernels.DropPolicy, gomoe's one drop-policy type. A Config's zero DropPolicy is DropByProb.
type DropPolicy = kernels.DropPolicy

const (
	// DropByProb keeps each expert's C pairs with the highest router prob, ties to the lower
	// token index (kernels.DropByProb; the default).
	DropByProb = kernels.DropByProb
	// DropByPosition keeps each expert's first C pairs in token order, a token's second
	// choice before a later token's first (kernels.DropByPosition; Megatron's "position"
	// policy, not GShard's slot-major order).
	DropByPosition = kernels.DropByPosition
)

// DefaultBiasUpdateRate is the expert-bias update rate used when Config.BiasUpdateRate is 0
// (DeepSeek-V3, Megatron).
const DefaultBiasUpdateRate = 1e-3

// Config describes an MoE layer. The zero value of every optional field means "off" or the
// documented default; New validates the whole config and names the first problem it finds.
type Config struct {
	// Hidden is H, the width of the layer's input and output.
	Hidden int
	// FFN is F, the hidden width of each routed expert.
	FFN int
	// Experts is E, the number of routed experts.
	Experts int
	// TopK is K, the number of experts each token is sent to (1 <= K <= E).
	TopK int

	// Dtype is the dtype of the input, output and expert weights: tensor.Float32 (the
	// default when zero), tensor.Float64 or bfloat16.Dtype. A bfloat16 layer computes in
	// float32 inside every kernel (fp32 accumulation) and keeps its router, probs and losses
	// in float32; train.Adam and train.SGD keep float32 master copies of its weights. Its
	// backward runs on the GPU (device engine), and so does the forward of its shared experts
	// (SharedFFN > 0): on the CPU, Gorgonia's own gradient sums, matmul and addition do not
	// take bfloat16 (the run fails with their error).
	Dtype tensor.Dtype
	// RouterDtype is the dtype of the router weight, logits and probs, in which the routing
	// losses are computed (the "fp32 router" of Megatron/Switch: set it to tensor.Float32, or
	// to tensor.Float64 for a float64 router in a float32 model): float32 or float64. Zero
	// means Dtype (float32 for a bfloat16 layer). The probs are cast to Dtype for the combine
	// (kept float32 for bfloat16, which the combine takes), and so are the loss nodes of
	// Output (float32 for bfloat16), so that they add to a task loss of Dtype. A bfloat16
	// layer multiplies its bfloat16 input by the float32 router with op.MixedMatMul (on the
	// GPU: bfloat16 tensor cores, float32 accuracy), unless JitterEps makes the input float32
	// first.
	RouterDtype tensor.Dtype

	// Score is the score function, Softmax (default) or Sigmoid.
	Score ScoreFunc
	// PreSoftmax (Softmax only) selects the top K of the softmax over all E experts and uses
	// those probabilities as they are (no renormalisation; Switch, OLMoE, and Qwen3-MoE with
	// norm_topk_prob off: transformers' default, but the released Qwen3 MoE checkpoints turn
	// it on and renormalise, as below; moe/hf maps it). Without it
	// the probs are a softmax over the K selected logits, which equals renormalising the top-K
	// softmax probabilities (Mixtral). With K = 1 that softmax is always 1 and gives the router
	// no gradient, so Softmax with K = 1 requires PreSoftmax.
	PreSoftmax bool
	// Groups > 1 turns on group-limited routing: the E experts form Groups equal groups and
	// each token chooses its K experts from the GroupsKept groups with the highest group score
	// (the sum of the group's top max(1, K/GroupsKept) selection scores). The selection scores
	// are the sigmoid scores plus the expert bias (Sigmoid), the softmax probabilities
	// (PreSoftmax), or the logits themselves (Softmax without PreSoftmax): then a group's score
	// sums logits, not probabilities, and with K/GroupsKept > 1 it may keep other groups than
	// sums of the softmax would.
	Groups, GroupsKept int
	// ScalingFactor multiplies the probs after normalisation (DeepSeek-V3: 2.5). 0 means 1.
	ScalingFactor float64
	// ExpertBias turns on aux-loss-free balancing (Sigmoid only): a bias [E] is added to the
	// scores for the selection only, and Layer.UpdateExpertBias moves it after each step by
	// BiasUpdateRate·sign(mean load − load) outside the gradient.
	ExpertBias bool
	// BiasUpdateRate is the expert-bias step; 0 means DefaultBiasUpdateRate.
	BiasUpdateRate float64
	// JitterEps > 0 multiplies the router input by fresh uniform noise in [1−ε, 1+ε) on every
	// run (Switch). It is for training graphs; build the evaluation graph without it.
	JitterEps float64

	// AuxLossCoeff weights the micro-batch load-balancing loss
	// E/(K·T²)·Σ_e N_e·Σ_t s[t,e] (N_e tokens routed to e, s the scores over all E experts:
	// the softmax, or the sigmoid normalised over E). It is 1 at perfect balance. N_e counts
	// Output.IDs: before capacity drops (as Switch, GShard and Megatron count), and chosen
	// with the expert bias and within the kept groups. DeepSeek-V3's f_i, and Megatron's
	// counts since it took the aux losses' routing apart, are the plain top-K of the scores
	// instead, without bias or groups; the two differ only with ExpertBias or Groups > 1.
	AuxLossCoeff float64
	// SeqAuxLossCoeff weights the same loss computed per sequence of SeqLen tokens and
	// averaged over the T/SeqLen sequences (DeepSeek-V2/V3 sequence-wise balance loss).
	SeqAuxLossCoeff float64
	// SeqLen is the sequence length for SeqAuxLossCoeff; T must be a multiple of it, and the S
	// of a [B,S,H] input must equal it (Forward refuses another S, whose sequences the loss's
	// would cross or split).
	SeqLen int
	// ZLossCoeff weights the router z-loss (1/T)·Σ_t (log Σ_e exp logits[t,e])² (ST-MoE).
	ZLossCoeff float64

	// Activation is the expert FFN type, SwiGLU (default) or GELU.
	Activation Activation
	// SharedFFN > 0 adds an always-on shared expert FFN of that hidden width (the total of
	// all shared experts, e.g. 2·F for two shared experts) whose output is added to the
	// routed output.
	SharedFFN int

	// CapacityFactor > 0 turns on capacity mode: each expert takes at most
	// C = ceil(T·K/E·CapacityFactor) tokens and drops the rest by DropPolicy. 0 is dropless.
	// A C above T (a factor above E/K, or MinCapacity) keeps nothing more, since no expert
	// gets more than T pairs: without PadToCapacity the layer sizes its buffers for T rows an
	// expert then (a factor of 10⁵ used to allocate gigabytes for a few tokens).
	CapacityFactor float64
	// EvalCapacityFactor is the capacity factor of Layer.Infer (DeepSpeed's
	// eval_capacity_factor); 0 means CapacityFactor. A layer trained dropless can evaluate in
	// capacity mode, and E/K is a factor that never drops (C = T). Infer is dropless only when
	// both factors are 0.
	EvalCapacityFactor float64
	// MinCapacity is the smallest per-expert capacity in capacity mode, in training and in
	// Infer (DeepSpeed's min_capacity): C = max(MinCapacity, ceil(T·K/E·factor)). 0 means 1.
	MinCapacity int
	// DropPolicy is DropByProb (default) or DropByPosition (capacity mode only).
	DropPolicy DropPolicy
	// PadToCapacity gives every expert a segment of exactly C' rows, C' = C rounded up to
	// Align (capacity mode only), so expert e's rows are always [e·C', (e+1)·C') of the
	// permuted buffer, an [E,C',H] tensor (GShard's and Tutel's layout); without it the
	// segments are packed and the unused rows lie at the end. The layer's outputs are the
	// same either way.
	PadToCapacity bool
	// Align pads every expert's segment of the permuted buffer to a multiple of Align rows
	// (0 means 1).
	Align int

	// ProbsOnActivation multiplies each expert's activation by the token's prob before the
	// expert's output projection (Megatron), and combines unweighted. By default the probs
	// weight the combine-unpermute.
	ProbsOnActivation bool

	// Seed seeds the weight initialisation and the jitter noise (the noise draws from a seed
	// derived from Seed, not from the weights' stream).
	Seed int64
}

// WithDefaults returns c with its zero defaults filled in, as New uses it (Layer.Config
// returns the same): Dtype float32; RouterDtype Dtype (float32 for bfloat16); Groups and
// GroupsKept 1; ScalingFactor 1; BiasUpdateRate DefaultBiasUpdateRate; Align 1; Activation
// SwiGLU; DropPolicy DropByProb.
func (c Config) WithDefaults() Config {
	if c.Dtype == (tensor.Dtype{}) {
		c.Dtype = tensor.Float32
	}
	if c.RouterDtype == (tensor.Dtype{}) {
		c.RouterDtype = c.Dtype
		if c.Dtype == bfloat16.Dtype {
			c.RouterDtype = tensor.Float32
		}
	}
	c.Groups, c.GroupsKept = kernels.TopKGroups(c.Groups, c.GroupsKept)
	if c.ScalingFactor == 0 {
		c.ScalingFactor = 1
	}
	if c.BiasUpdateRate == 0 {
		c.BiasUpdateRate = DefaultBiasUpdateRate
	}
	if c.Align == 0 {
		c.Align = 1
	}
	if c.Activation == 0 {
		c.Activation = SwiGLU
	}
	if c.DropPolicy == 0 {
		c.DropPolicy = DropByProb
	}
	return c
}

// String prints c as fmt's %+v would, {Hidden:256 FFN:512 ...}, with a zero Dtype or
// RouterDtype as "default" (a zero tensor.Dtype cannot print itself: fmt would report a
// panic in its place), and a zero Activation as "default" too, as a zero DropPolicy prints.
func (c Config) String() string {
	v := reflect.ValueOf(c)
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i < v.NumField(); i++ {
		if i > 0 {
			b.WriteByte(' ')
		}
		f := v.Field(i).Interface()
		if dt, ok := f.(tensor.Dtype); ok && dt == (tensor.Dtype{}) {
			f = "default"
		}
		if a, ok := f.(Activation); ok && a == 0 {
			f = "default" // as a zero DropPolicy prints; kernels' own String says Activation(0)
		}
		fmt.Fprintf(&b, "%s:%v", v.Type().Field(i).Name, f)
	}
	b.WriteByte('}')
	return b.String()
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// Validate reports the first problem with c, or nil.
func (c Config) Validate() error {
	c = c.WithDefaults()
	e := func(format string, args ...any) error { return fmt.Errorf("gomoe: moe config: "+format, args...) }
	isFloat := func(dt tensor.Dtype) bool { return dt == tensor.Float32 || dt == tensor.Float64 }
	// The probs are float32 in a float32 router, and in the combine of a float32 layer whatever
	// the router's dtype (a float64 router's probs are cast to float32 there; a bfloat16 layer
	// takes a float32 router only).
	probs32, probsIn := true, "the float32 router"
	if c.RouterDtype != tensor.Float32 {
		probs32, probsIn = c.Dtype != tensor.Float64, "the float32 probs of the combine"
	}
	switch {
	case c.Hidden < 1:
		return e("Hidden=%d, want >= 1", c.Hidden)
	case c.FFN < 1:
		return e("FFN=%d, want >= 1", c.FFN)
	case c.Experts < 1 || c.Experts > math.MaxInt32:
		return e("Experts=%d, want 1 <= Experts <= %d (expert ids are int32)", c.Experts, math.MaxInt32)
	case c.TopK < 1:
		return e("TopK=%d, want >= 1", c.TopK)
	case c.TopK > c.Experts:
		return e("TopK=%d > Experts=%d: a token cannot use more distinct experts than exist", c.TopK, c.Experts)
	case !isFloat(c.Dtype) && c.Dtype != bfloat16.Dtype:
		return e("Dtype=%v, want float32, float64 or bfloat16", c.Dtype)
	case c.Dtype == bfloat16.Dtype && c.RouterDtype != tensor.Float32:
		return e("RouterDtype=%v for a bfloat16 layer, want float32", c.RouterDtype)
	case !isFloat(c.RouterDtype):
		return e("RouterDtype=%v, want float32 or float64", c.RouterDtype)
	case c.Score != Softmax && c.Score != Sigmoid:
		return e("unknown score function %v", c.Score)
	case c.PreSoftmax && c.Score != Softmax:
		return e("PreSoftmax needs the Softmax score function, got %v", c.Score)
	case c.Score == Softmax && !c.PreSoftmax && c.TopK == 1 && c.Experts > 1:
		return e("Softmax with TopK=1 needs PreSoftmax: a softmax over one selected logit is always 1 and gives the router no gradient")
	case c.Groups < 1:
		return e("Groups=%d, want >= 1", c.Groups)
	case c.Experts%c.Groups != 0:
		return e("Experts=%d is not divisible by Groups=%d", c.Experts, c.Groups)
	case c.GroupsKept < 1 || c.GroupsKept > c.Groups:
		return e("GroupsKept=%d, want 1 <= GroupsKept <= Groups=%d", c.GroupsKept, c.Groups)
	case c.TopK > c.GroupsKept*(c.Experts/c.Groups):
		return e("TopK=%d does not fit in GroupsKept=%d groups of %d experts", c.TopK, c.GroupsKept, c.Experts/c.Groups)
	case !finite(c.ScalingFactor) || c.ScalingFactor <= 0:
		return e("ScalingFactor=%g, want > 0", c.ScalingFactor)
	case probs32 && c.ScalingFactor > math.MaxFloat32:
		return e("ScalingFactor=%g does not fit %s (at most %g)", c.ScalingFactor, probsIn, math.MaxFloat32)
	case probs32 && float32(c.ScalingFactor) == 0:
		return e("ScalingFactor=%g rounds to 0 in %s (every prob would be 0)", c.ScalingFactor, probsIn)
	case c.ExpertBias && c.Score != Sigmoid:
		return e("ExpertBias needs the Sigmoid score function (the bias is added to sigmoid scores), got %v", c.Score)
	case !finite(c.BiasUpdateRate) || c.BiasUpdateRate < 0:
		return e("BiasUpdateRate=%g, want >= 0", c.BiasUpdateRate)
	case c.RouterDtype == tensor.Float32 && c.BiasUpdateRate > math.MaxFloat32:
		return e("BiasUpdateRate=%g does not fit the float32 router (at most %g)", c.BiasUpdateRate, math.MaxFloat32)
	case c.RouterDtype == tensor.Float32 && c.BiasUpdateRate > 0 && float32(c.BiasUpdateRate) == 0:
		return e("BiasUpdateRate=%g rounds to 0 in the float32 router (the bias would never move)", c.BiasUpdateRate)
	case !finite(c.JitterEps) || c.JitterEps < 0 || c.JitterEps >= 1:
		return e("JitterEps=%g, want 0 <= JitterEps < 1", c.JitterEps)
	case !finite(c.AuxLossCoeff) || c.AuxLossCoeff < 0:
		return e("AuxLossCoeff=%g, want >= 0", c.AuxLossCoeff)
	case !finite(c.SeqAuxLossCoeff) || c.SeqAuxLossCoeff < 0:
		return e("SeqAuxLossCoeff=%g, want >= 0", c.SeqAuxLossCoeff)
	case c.SeqAuxLossCoeff > 0 && c.SeqLen < 1:
		return e("SeqAuxLossCoeff=%g needs SeqLen >= 1, got %d", c.SeqAuxLossCoeff, c.SeqLen)
	case c.SeqLen < 0:
		return e("SeqLen=%d, want >= 0", c.SeqLen)
	case !finite(c.ZLossCoeff) || c.ZLossCoeff < 0:
		return e("ZLossCoeff=%g, want >= 0", c.ZLossCoeff)
	case c.Activation != SwiGLU && c.Activation != GELU:
		return e("unknown activation %v", c.Activation)
	case c.SharedFFN < 0:
		return e("SharedFFN=%d, want >= 0", c.SharedFFN)
	case !finite(c.CapacityFactor) || c.CapacityFactor < 0:
		return e("CapacityFactor=%g, want >= 0 (0 is dropless)", c.CapacityFactor)
	case c.DropPolicy != DropByProb && c.DropPolicy != DropByPosition:
		return e("unknown drop policy %v", c.DropPolicy)
	case c.CapacityFactor == 0 && c.PadToCapacity:
		return e("PadToCapacity needs capacity mode (CapacityFactor > 0)")
	case !finite(c.EvalCapacityFactor) || c.EvalCapacityFactor < 0:
		return e("EvalCapacityFactor=%g, want >= 0 (0 is CapacityFactor)", c.EvalCapacityFactor)
	case c.MinCapacity < 0 || c.MinCapacity > kernels.MaxRows:
		return e("MinCapacity=%d, want 0 <= MinCapacity <= %d", c.MinCapacity, kernels.MaxRows)
	case c.Align < 1:
		return e("Align=%d, want >= 1", c.Align)
	case c.inWidth()*float64(c.Experts)*float64(c.Hidden)*float64(c.FFN) > maxWeightElems ||
		c.inWidth()*float64(c.Hidden)*float64(c.SharedFFN) > maxWeightElems:
		return e("the weights of Experts=%d Hidden=%d FFN=%d SharedFFN=%d are too large to allocate", c.Experts, c.Hidden, c.FFN, c.SharedFFN)
	}
	return nil
}

// checkMemory reports weights that cannot fit in the memory this process may use: New
// allocates them on the host, and a failed allocation is fatal, not an error. It is New's
// check, not Validate's, so that a Config can describe a model larger than the machine
// (moe/hf reads the configs of whole checkpoints).
func (c Config) checkMemory() error {
	return hostmem.Check(fmt.Sprintf("gomoe: moe config: the weights of Experts=%d Hidden=%d FFN=%d SharedFFN=%d", c.Experts, c.Hidden, c.FFN, c.SharedFFN), c.weightBytes())
}

// checkMemoryEP is checkMemory for NewExpertParallel on a rank holding el of the E experts: it
// draws the whole layer (as New does) and copies out of it the router, the bias, the shared
// experts and the rank's experts, so it holds both at once.
func (c Config) checkMemoryEP(el int) error {
	shard := c
	shard.Experts = el
	copies := shard.weightBytes() + float64(c.Experts-el)*float64(c.Hidden+1)*float64(c.RouterDtype.Size())
	return hostmem.Check(fmt.Sprintf("gomoe: moe config: the weights of Experts=%d Hidden=%d FFN=%d SharedFFN=%d and a rank's copy of them with %d experts", c.Experts, c.Hidden, c.FFN, c.SharedFFN, el), c.weightBytes()+copies)
}

// WeightBytes is the host memory, in bytes, of the weights New allocates for c (the router,
// its bias, the experts and the shared experts; c's defaults filled in), computed in floating
// point so that no product wraps around: what a program that builds several layers checks
// against its memory before it builds any (New checks one layer's).
func (c Config) WeightBytes() float64 { return c.WithDefaults().weightBytes() }

// weightBytes is the host memory of the layer's weights (c with defaults), in floating point
// so that no product wraps around.
func (c Config) weightBytes() float64 {
	mats := c.inWidth() + 1 // W1 (gate and up for SwiGLU) and W2
	H, F, E, S := float64(c.Hidden), float64(c.FFN), float64(c.Experts), float64(c.SharedFFN)
	size := float64(c.Dtype.Size())
	return mats*(E*H*F+H*S)*size + (H*E+E)*float64(c.RouterDtype.Size())
}

// inWidth is the number of FFN-wide blocks of the input projection W1: 2 for SwiGLU (gate and
// up packed), 1 for GELU.
func (c Config) inWidth() float64 {
	if c.Activation == GELU {
		return 1
	}
	return 2
}

// maxWeightElems bounds the elements of one weight tensor (2^45, 128 TiB of float32; the
// packed W1 of 2^20 experts of 4096×4096 is exactly that): above it a Go allocation cannot
// succeed, and the product could wrap around in int.
const maxWeightElems = 1 << 45

// Capacity is C, the per-expert capacity for T tokens in training (Layer.Forward):
// ceil(T·K/E·CapacityFactor), at least max(1, MinCapacity); 0 in dropless mode. The layer's
// plan takes min(C, T) without PadToCapacity (no expert gets more than T pairs).
func (c Config) Capacity(T int) int { return c.capacity(T, c.CapacityFactor) }

// EvalCapacity is C for T tokens in Layer.Infer: Capacity with EvalCapacityFactor (or
// CapacityFactor when that is 0); 0 when Infer is dropless.
func (c Config) EvalCapacity(T int) int { return c.capacity(T, c.evalFactor()) }

// evalFactor is the capacity factor of Infer.
func (c Config) evalFactor() float64 {
	if c.EvalCapacityFactor > 0 {
		return c.EvalCapacityFactor
	}
	return c.CapacityFactor
}

func (c Config) capacity(T int, factor float64) int {
	if factor == 0 {
		return 0
	}
	// The product carries the roundings of a decimal factor stored in binary (1.1 is
	// 1.1000000000000000888…): a slack of a few ulps of it (at least 1e-9) keeps an exact
	// product from rounding up to the next row. No true fraction of a row is that small: it is
	// at least 1/E of the factor's last decimal.
	x := float64(T) * float64(c.TopK) / float64(c.Experts) * factor
	v := math.Ceil(x - max(1e-9, x*0x1p-50))
	if !(v <= float64(kernels.MaxRows)) { // never let the conversion wrap (nor an overflowed product's NaN through): the plan's check rejects it
		return math.MaxInt
	}
	return max(1, c.MinCapacity, int(v))
}

// geometry is the routing plan geometry for T tokens with the given capacity factor; c has its
// defaults filled in (WithDefaults), as a Layer's config has.
func (c Config) geometry(T int, factor float64) (kernels.Geometry, error) {
	if T < 1 {
		return kernels.Geometry{}, errors.New("the input has no tokens")
	}
	g := kernels.Geometry{T: T, K: c.TopK, E: c.Experts, A: c.Align}
	if factor > 0 {
		g.Mode = kernels.Capacity
		g.C = c.capacity(T, factor)
		if !c.PadToCapacity {
			// No expert gets more than T pairs (a token names it at most once): a larger C
			// only adds rows that stay empty. With PadToCapacity the segments are C rows, as
			// asked.
			g.C = min(g.C, T)
		}
		g.Drop = c.DropPolicy
		g.PadToCapacity = c.PadToCapacity
	}
	return g, g.Validate()
}

// checkRows checks that the activations of rows routed rows fit in memory: the forward pass
// alone holds xp and yp [rows, H], the experts' input projection [rows, inWidth·F] and its
// activation [rows, F].
func (c Config) checkRows(T, rows int) error {
	width := 2*float64(c.Hidden) + (c.inWidth()+1)*float64(c.FFN)
	return hostmem.Check(fmt.Sprintf("gomoe: moe: T=%d tokens' %d permuted rows (%g values a row in the forward pass)", T, rows, width), float64(rows)*width*float64(c.Dtype.Size()))
}
