package trainutil

import (
	"fmt"

	G "gorgonia.org/gorgonia"

	"github.com/gomoe/gomoe/moe"
)

// moeBlock adapts a gomoe MoE layer to Block.
type moeBlock struct {
	layer *moe.Layer
}

// MoEConfig translates the example flags into a moe.Config.
func MoEConfig(cfg BlockConfig) (moe.Config, error) {
	mc := moe.Config{
		Hidden:         cfg.Hidden,
		FFN:            cfg.FFN,
		Experts:        cfg.Experts,
		TopK:           cfg.TopK,
		AuxLossCoeff:   cfg.AuxCoef,
		ZLossCoeff:     cfg.ZCoef,
		CapacityFactor: cfg.Capacity,
		Seed:           int64(cfg.Seed),
	}
	// Softmax with K = 1 needs the top-k taken after the softmax over all E
	// experts, or the router gets no gradient.
	if cfg.TopK == 1 {
		mc.PreSoftmax = true
	}
	switch cfg.Act {
	case "swiglu":
		mc.Activation = moe.SwiGLU
	case "gelu":
		mc.Activation = moe.GELU
	default:
		return moe.Config{}, fmt.Errorf("unknown activation %q (want swiglu or gelu)", cfg.Act)
	}
	switch cfg.Drop {
	case "", "probs", "prob":
		mc.DropPolicy = moe.DropByProb
	case "position":
		mc.DropPolicy = moe.DropByPosition
	default:
		return moe.Config{}, fmt.Errorf("-drop %q: unknown drop policy (want probs or position)", cfg.Drop)
	}
	return mc, mc.Validate()
}

// newMoEBlock builds the gomoe MoE layer that cfg describes.
func newMoEBlock(g *G.ExprGraph, name string, cfg BlockConfig) (Block, error) {
	mc, err := MoEConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", name, err)
	}
	l, err := moe.New(g, name, mc)
	if err != nil {
		return nil, fmt.Errorf("block %s: %w", name, err)
	}
	return &moeBlock{layer: l}, nil
}

// Forward applies the MoE layer to x [T,H].
func (b *moeBlock) Forward(x *G.Node) (BlockOut, error) {
	out, err := b.layer.Forward(x)
	if err != nil {
		return BlockOut{}, err
	}
	return BlockOut{Y: out.Y, Loss: out.Loss, Counts: out.Counts}, nil
}

// Learnables returns the layer's router and expert weights.
func (b *moeBlock) Learnables() G.Nodes { return b.layer.Learnables() }
