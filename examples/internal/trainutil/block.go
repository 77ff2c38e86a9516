package trainutil

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/op"
	"github.com/gomoe/gomoe/train"
)

// DefaultBlockConfig returns the examples' default feed-forward block: 8 SwiGLU experts of
// width 128 on a model of width 128, top-2, dropless (probs policy in capacity mode), with
// load-balancing loss 0.05 and router z-loss 0.001.
func DefaultBlockConfig() BlockConfig {
	return BlockConfig{
		Experts: 8,
		TopK:    2,
		Hidden:  128,
		FFN:     128,
		Act:     "swiglu",
		Drop:    "probs",
		AuxCoef: 0.05,
		ZCoef:   0.001,
	}
}

// BlockConfig describes the feed-forward block of an example model.
type BlockConfig struct {
	Experts  int     // number of routed experts E
	TopK     int     // experts per token K
	Hidden   int     // model width H
	FFN      int     // expert FFN size F
	Act      string  // "swiglu" or "gelu"
	Capacity float64 // capacity factor; 0 means dropless
	Drop     string  // drop policy in capacity mode: "probs" or "position"
	AuxCoef  float64 // load-balancing loss coefficient
	ZCoef    float64 // router z-loss coefficient
	Seed     uint64  // weight initialisation seed
	Dense    bool    // use a dense FFN instead of the MoE layer (for comparisons)
}

// BlockOut is what a feed-forward block adds to the graph.
type BlockOut struct {
	Y      *G.Node // output [T,H]
	Loss   *G.Node // weighted auxiliary losses to add to the cost (a zero constant when there are none, as moe.Output.Loss)
	Counts *G.Node // tokens per expert [E] int32, or nil
}

// Block is a feed-forward block: the gomoe MoE layer or a dense FFN.
type Block interface {
	Forward(x *G.Node) (BlockOut, error)
	Learnables() G.Nodes
}

// Validate reports the first problem with cfg, or nil.
func (cfg BlockConfig) Validate() error {
	const big = 1 << 24 // no flag of a block is meaningful beyond this
	inf := math.Inf(1)
	for _, err := range []error{
		IntFlag("hidden", cfg.Hidden, 1, big), IntFlag("ffn", cfg.FFN, 1, big),
		IntFlag("experts", cfg.Experts, 1, big), IntFlag("topk", cfg.TopK, 1, max(1, cfg.Experts)),
		FloatFlag("capacity", cfg.Capacity, 0, inf, false),
		FloatFlag("aux", cfg.AuxCoef, 0, inf, false), FloatFlag("zloss", cfg.ZCoef, 0, inf, false),
	} {
		if err != nil && !(cfg.Dense && isRoutingFlag(err)) {
			return err
		}
	}
	if cfg.Act != "swiglu" && cfg.Act != "gelu" {
		return fmt.Errorf("-act %q: unknown activation (want swiglu or gelu)", cfg.Act)
	}
	if cfg.Dense {
		return nil
	}
	_, err := MoEConfig(cfg)
	return err
}

// WeightBytes is the host memory of the block's float32 weights, in bytes: what a model of
// several blocks checks against its memory before it builds any (each block checks only its
// own when it is built).
func (cfg BlockConfig) WeightBytes() (float64, error) {
	if cfg.Dense {
		mats := 2.0 // w1 and w2, and w3 for SwiGLU
		if cfg.Act == "swiglu" {
			mats = 3
		}
		return mats * float64(cfg.Hidden) * float64(cfg.FFN) * 4, nil
	}
	mc, err := MoEConfig(cfg)
	if err != nil {
		return 0, err
	}
	return mc.WeightBytes(), nil
}

// RunFlags returns cfg's flags as "-name value" pairs, for LoopConfig.RunFlags: a resumed run
// must repeat them. The drop policy is spelled one way ("", "prob" and "probs" are one policy:
// a run saved with one used to refuse to resume with another).
func (cfg BlockConfig) RunFlags() string {
	return fmt.Sprintf("-experts %d -topk %d -hidden %d -ffn %d -act %s -capacity %g -drop %s -aux %g -zloss %g -dense %t",
		cfg.Experts, cfg.TopK, cfg.Hidden, cfg.FFN, cfg.Act, cfg.Capacity, canonFlag("-drop", cfg.Drop), cfg.AuxCoef, cfg.ZCoef, cfg.Dense)
}

// Name is "MoE", or "dense" for a dense FFN block: what the examples' reports call the model.
func (cfg BlockConfig) Name() string {
	if cfg.Dense {
		return "dense"
	}
	return "MoE"
}

// Shape describes the block's sizes for a report: "E=8 K=2 swiglu H=128 F=128", or
// "swiglu H=128 F=128" for a dense FFN block (it has no experts).
func (cfg BlockConfig) Shape() string {
	if cfg.Dense {
		return fmt.Sprintf("%s H=%d F=%d", cfg.Act, cfg.Hidden, cfg.FFN)
	}
	return fmt.Sprintf("E=%d K=%d %s H=%d F=%d", cfg.Experts, cfg.TopK, cfg.Act, cfg.Hidden, cfg.FFN)
}

// isRoutingFlag reports whether err is about a flag a dense block ignores.
func isRoutingFlag(err error) bool {
	for _, f := range []string{"-experts ", "-topk ", "-capacity ", "-aux ", "-zloss "} {
		if strings.HasPrefix(err.Error(), f) {
			return true
		}
	}
	return false
}

// NewBlock returns the feed-forward block that cfg describes, named name in g.
func NewBlock(g *G.ExprGraph, name string, cfg BlockConfig) (Block, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("trainutil: block %s: %w", name, err)
	}
	if cfg.Dense {
		d, err := newDenseFFN(g, name, cfg)
		if err != nil {
			return nil, fmt.Errorf("trainutil: block %s: %w", name, err)
		}
		return d, nil
	}
	return newMoEBlock(g, name, cfg)
}

// denseFFN is a plain FFN with the same activation as the experts.
type denseFFN struct {
	name       string
	act        string
	w1, w3, w2 *G.Node
}

func newDenseFFN(g *G.ExprGraph, name string, cfg BlockConfig) (*denseFFN, error) {
	in, err := train.NewInitFrom(rand.New(rand.NewPCG(cfg.Seed, 0x9e3779b97f4a7c15)))
	if err != nil {
		return nil, err
	}
	H, F := cfg.Hidden, cfg.FFN
	d := &denseFFN{name: name, act: cfg.Act}
	if d.w1, err = Param(g, in, name+".w1", H, F, 1/math.Sqrt(float64(H))); err != nil {
		return nil, err
	}
	if cfg.Act == "swiglu" {
		if d.w3, err = Param(g, in, name+".w3", H, F, 1/math.Sqrt(float64(H))); err != nil {
			return nil, err
		}
	}
	if d.w2, err = Param(g, in, name+".w2", F, H, 1/math.Sqrt(float64(F))); err != nil {
		return nil, err
	}
	return d, nil
}

// Forward applies the FFN to x [T,H].
func (d *denseFFN) Forward(x *G.Node) (BlockOut, error) {
	a, err := G.Mul(x, d.w1)
	if err != nil {
		return BlockOut{}, err
	}
	var h *G.Node
	if d.act == "swiglu" {
		b, err := G.Mul(x, d.w3)
		if err != nil {
			return BlockOut{}, err
		}
		if h, err = op.SwiGLU(a, b); err != nil {
			return BlockOut{}, err
		}
	} else if h, err = GELU(a); err != nil {
		return BlockOut{}, err
	}
	y, err := G.Mul(h, d.w2)
	if err != nil {
		return BlockOut{}, err
	}
	zero := any(float32(0))
	if x.Dtype() == tensor.Float64 {
		zero = float64(0)
	}
	return BlockOut{Y: y, Loss: G.NewConstant(zero, G.In(x.Graph()), G.WithName(d.name+".noloss"))}, nil
}

// Learnables returns the FFN weights.
func (d *denseFFN) Learnables() G.Nodes {
	if d.w3 != nil {
		return G.Nodes{d.w1, d.w3, d.w2}
	}
	return G.Nodes{d.w1, d.w2}
}
