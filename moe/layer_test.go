package moe

import (
	"math/rand"
	"testing"

	"gorgonia.org/tensor"
)

// setBias gives the layer's expert bias fixed, distinct values.
func setBias(vals ...float64) func(*Layer) {
	return func(l *Layer) {
		switch b := l.Bias.Value().Data().(type) {
		case []float64:
			copy(b, vals)
		case []float32:
			for i, v := range vals {
				b[i] = float32(v)
			}
		}
	}
}

func TestLayerMatchesDenseReference(t *testing.T) {
	const T, H, F, E = 12, 4, 3, 4
	base := Config{Hidden: H, FFN: F, Experts: E, Dtype: tensor.Float64, Seed: 3}
	variants := []struct {
		name  string
		mod   func(*Config)
		setup func(*Layer)
	}{
		{"softmax top2 renorm", func(c *Config) { c.TopK = 2 }, nil},
		{"softmax pre top2", func(c *Config) { c.TopK = 2; c.PreSoftmax = true }, nil},
		{"softmax pre top1 scaled", func(c *Config) { c.TopK = 1; c.PreSoftmax = true; c.ScalingFactor = 1.7 }, nil},
		{"sigmoid top2 groups bias scale", func(c *Config) {
			c.TopK = 2
			c.Score = Sigmoid
			c.Groups, c.GroupsKept = 2, 1
			c.ExpertBias = true
			c.ScalingFactor = 2.5
		}, setBias(0.05, -0.1, 0.2, 0)},
		{"sigmoid top1", func(c *Config) { c.TopK = 1; c.Score = Sigmoid }, nil},
		{"softmax top3 groups", func(c *Config) { c.TopK = 3; c.Groups, c.GroupsKept = 4, 3 }, nil},
		{"gelu shared probs-on-activation", func(c *Config) {
			c.TopK = 2
			c.Activation = GELU
			c.SharedFFN = 5
			c.ProbsOnActivation = true
		}, nil},
		{"swiglu shared losses", func(c *Config) {
			c.TopK = 2
			c.SharedFFN = 2
			c.AuxLossCoeff = 0.3
			c.SeqAuxLossCoeff = 0.2
			c.SeqLen = 4
			c.ZLossCoeff = 0.05
		}, nil},
		{"sigmoid losses probs-on-activation", func(c *Config) {
			c.TopK = 2
			c.Score = Sigmoid
			c.AuxLossCoeff = 0.5
			c.ZLossCoeff = 0.1
			c.ProbsOnActivation = true
		}, nil},
		// The balancing losses count the routed ids: with the bias, within the kept groups,
		// before drops (the reference's chosen).
		{"sigmoid groups bias losses", func(c *Config) {
			c.TopK = 2
			c.Score = Sigmoid
			c.Groups, c.GroupsKept = 2, 1
			c.ExpertBias = true
			c.AuxLossCoeff = 0.4
			c.SeqAuxLossCoeff = 0.3
			c.SeqLen = 6
		}, setBias(0.3, -0.2, 0.1, 0.4)},
		{"float32 router in float64 model", func(c *Config) { c.TopK = 2; c.RouterDtype = tensor.Float32 }, nil},
	}
	modes := []struct {
		name string
		mod  func(*Config)
	}{
		{"dropless", func(c *Config) {}},
		{"dropless A4", func(c *Config) { c.Align = 4 }},
		{"capacity prob", func(c *Config) { c.CapacityFactor = 0.7 }},
		{"capacity position pad A2", func(c *Config) {
			c.CapacityFactor = 0.7
			c.DropPolicy = DropByPosition
			c.PadToCapacity = true
			c.Align = 2
		}},
	}
	rng := rand.New(rand.NewSource(1))
	x := randVec(rng, T*H)
	rnd := randVec(rng, T*H)
	for _, v := range variants {
		for _, m := range modes {
			cfg := base
			v.mod(&cfg)
			m.mod(&cfg)
			name := v.name + "/" + m.name
			l, got := runLayer(t, cfg, T, x, rnd, v.setup)
			want := refForwardBackward(t, l.Config(), T, paramsOf(l, x), rnd)
			tol := 1e-10
			if cfg.RouterDtype == tensor.Float32 {
				tol = 1e-5
			}
			compareResults(t, name, got, want, tol)
			if cfg.CapacityFactor > 0 {
				dropped := 0
				for tk := range want.chosen {
					for e := range want.chosen[tk] {
						if want.chosen[tk][e] && !want.kept[tk][e] {
							dropped++
						}
					}
				}
				if dropped == 0 {
					t.Errorf("%s: the capacity case drops nothing; the test does not exercise drops", name)
				}
			}
		}
	}
}

// TestLayerFloat32MatchesReference runs one float32 layer against the float64 reference.
func TestLayerFloat32MatchesReference(t *testing.T) {
	const T = 10
	cfg := Config{Hidden: 6, FFN: 5, Experts: 5, TopK: 2, SharedFFN: 3, AuxLossCoeff: 0.1, ZLossCoeff: 0.01, CapacityFactor: 1, Seed: 8}
	rng := rand.New(rand.NewSource(2))
	x, rnd := randVec(rng, T*cfg.Hidden), randVec(rng, T*cfg.Hidden)
	l, got := runLayer(t, cfg, T, x, rnd, nil)
	// The reference runs in float64 on the float32 weights (exactly representable).
	want := refForwardBackward(t, l.Config(), T, paramsOf(l, roundTo32(x)), roundTo32(rnd))
	compareResults(t, "float32", got, want, 2e-5)
}

func roundTo32(v []float64) []float64 {
	o := make([]float64, len(v))
	for i, x := range v {
		o[i] = float64(float32(x))
	}
	return o
}
