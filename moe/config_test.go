package moe

import (
	"fmt"
	"math"
	"strings"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/bfloat16"
	"github.com/gomoe/gomoe/kernels"
)

func TestConfigValidation(t *testing.T) {
	ok := Config{Hidden: 4, FFN: 4, Experts: 8, TopK: 2}
	cases := []struct {
		name   string
		mod    func(*Config)
		substr string
	}{
		{"K > E", func(c *Config) { c.TopK = 9 }, "TopK=9 > Experts=8"},
		{"K = 0", func(c *Config) { c.TopK = 0 }, "TopK=0"},
		{"H = 0", func(c *Config) { c.Hidden = 0 }, "Hidden=0"},
		{"F = 0", func(c *Config) { c.FFN = 0 }, "FFN=0"},
		{"E not divisible by groups", func(c *Config) { c.Groups, c.GroupsKept = 3, 1 }, "not divisible by Groups=3"},
		{"groups kept > groups", func(c *Config) { c.Groups, c.GroupsKept = 2, 3 }, "GroupsKept=3"},
		{"K does not fit kept groups", func(c *Config) { c.TopK = 3; c.Groups, c.GroupsKept = 4, 1 }, "does not fit"},
		{"expert bias without sigmoid", func(c *Config) { c.ExpertBias = true }, "ExpertBias needs the Sigmoid"},
		{"pre-softmax with sigmoid", func(c *Config) { c.Score = Sigmoid; c.PreSoftmax = true }, "PreSoftmax needs"},
		{"softmax top-1 post", func(c *Config) { c.TopK = 1 }, "needs PreSoftmax"},
		{"int dtype", func(c *Config) { c.Dtype = tensor.Int }, "Dtype=int"},
		{"router dtype", func(c *Config) { c.RouterDtype = tensor.Int32 }, "RouterDtype=int32"},
		{"negative capacity", func(c *Config) { c.CapacityFactor = -1 }, "CapacityFactor=-1"},
		{"pad without capacity", func(c *Config) { c.PadToCapacity = true }, "PadToCapacity needs capacity"},
		{"jitter 1", func(c *Config) { c.JitterEps = 1 }, "JitterEps=1"},
		{"seq aux without seq len", func(c *Config) { c.SeqAuxLossCoeff = 0.1 }, "needs SeqLen"},
		{"NaN aux", func(c *Config) { c.AuxLossCoeff = math.NaN() }, "AuxLossCoeff=NaN"},
		{"negative z", func(c *Config) { c.ZLossCoeff = -1 }, "ZLossCoeff=-1"},
		{"scaling", func(c *Config) { c.ScalingFactor = -2 }, "ScalingFactor=-2"},
		{"scaling past float32", func(c *Config) { c.ScalingFactor = 1e39 }, "ScalingFactor=1e+39 does not fit the float32 router"},
		{"bias rate past float32", func(c *Config) { c.BiasUpdateRate = 1e39 }, "BiasUpdateRate=1e+39 does not fit the float32 router"},
		{"scaling below float32", func(c *Config) { c.ScalingFactor = 1e-46 }, "ScalingFactor=1e-46 rounds to 0 in the float32 router"},
		{"bias rate below float32", func(c *Config) { c.BiasUpdateRate = 1e-46 }, "BiasUpdateRate=1e-46 rounds to 0 in the float32 router"},
		// A float64 router's probs are cast to float32 for the combine of a float32 layer: the
		// outputs were NaN and ±Inf, or all 0, with no error.
		{"scaling past float32, float64 router", func(c *Config) { c.RouterDtype, c.ScalingFactor = tensor.Float64, 1e300 },
			"ScalingFactor=1e+300 does not fit the float32 probs of the combine"},
		{"scaling below float32, float64 router", func(c *Config) { c.RouterDtype, c.ScalingFactor = tensor.Float64, 1e-300 },
			"ScalingFactor=1e-300 rounds to 0 in the float32 probs of the combine"},
		{"align", func(c *Config) { c.Align = -1 }, "Align=-1"},
		{"activation", func(c *Config) { c.Activation = 7 }, "unknown activation"},
		{"score", func(c *Config) { c.Score = 5 }, "unknown score"},
		{"drop policy", func(c *Config) { c.DropPolicy = 9 }, "unknown drop policy"},
		{"shared", func(c *Config) { c.SharedFFN = -1 }, "SharedFFN=-1"},
		{"eval capacity", func(c *Config) { c.EvalCapacityFactor = -0.5 }, "EvalCapacityFactor=-0.5"},
		{"eval capacity NaN", func(c *Config) { c.EvalCapacityFactor = math.NaN() }, "EvalCapacityFactor=NaN"},
		{"min capacity", func(c *Config) { c.MinCapacity = -1 }, "MinCapacity=-1"},
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for _, c := range cases {
		cfg := ok
		c.mod(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.substr)
			continue
		}
		g := G.NewGraph()
		if _, err := New(g, "moe", cfg); err == nil {
			t.Errorf("%s: New accepted the config", c.name)
		}
		if len(g.AllNodes()) != 0 {
			t.Errorf("%s: New added %d nodes despite the error", c.name, len(g.AllNodes()))
		}
	}
}

func TestForwardRejectsBadInput(t *testing.T) {
	g := G.NewGraph()
	l, err := New(g, "moe", Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2, SeqAuxLossCoeff: 0.1, SeqLen: 4})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(g, "moe", Config{Hidden: 4, FFN: 2, Experts: 4, TopK: 2}); err == nil {
		t.Error("second layer with the same name: no error")
	}
	other := G.NewGraph()
	cases := []struct {
		name   string
		x      *G.Node
		substr string
	}{
		{"nil", nil, "nil"},
		{"wrong width", G.NewMatrix(g, tensor.Float32, G.WithShape(8, 5), G.WithName("x5")), "want (T, H=4)"},
		{"wrong dtype", G.NewMatrix(g, tensor.Float64, G.WithShape(8, 4), G.WithName("x64")), "dtype float64"},
		{"other graph", G.NewMatrix(other, tensor.Float32, G.WithShape(8, 4), G.WithName("xo")), "not in the layer's graph"},
		{"3-D wrong width", G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 4, 5), G.WithName("x3")), "want (T, H=4) or (B, S, H=4)"},
		{"4-D", G.NewTensor(g, tensor.Float32, 4, G.WithShape(2, 2, 2, 4), G.WithName("x4")), "want (T, H=4) or (B, S, H=4)"},
		{"3-D not whole sequences", G.NewTensor(g, tensor.Float32, 3, G.WithShape(1, 6, 4), G.WithName("x16")), "SeqLen=4"},
		{"T not whole sequences", G.NewMatrix(g, tensor.Float32, G.WithShape(6, 4), G.WithName("x6")), "SeqLen=4"},
		// B·S is whole sequences of SeqLen, but the loss's sequences would cross the input's
		// (or split them).
		{"3-D S > SeqLen", G.NewTensor(g, tensor.Float32, 3, G.WithShape(1, 8, 4), G.WithName("x18")), "S=8 tokens, but the sequence-wise balancing loss takes sequences of SeqLen=4"},
		{"3-D S not SeqLen", G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 6, 4), G.WithName("x26")), "S=6 tokens, but the sequence-wise balancing loss takes sequences of SeqLen=4"},
	}
	for _, c := range cases {
		_, err := l.Forward(c.x)
		if err == nil || !strings.Contains(err.Error(), c.substr) {
			t.Errorf("%s: got %v, want an error containing %q", c.name, err, c.substr)
		}
	}
	var _ = kernels.Dropless
}

// TestZeroDefaults checks that a Config's zero Activation and DropPolicy still mean SwiGLU and
// DropByProb now that both types are the kernels' (whose constants are not zero), that the
// layer's Config shows them filled in, and that a capacity-mode geometry carries DropByProb.
func TestZeroDefaults(t *testing.T) {
	if SwiGLU != kernels.SwiGLU || GELU != kernels.GELU || DropByProb != kernels.DropByProb || DropByPosition != kernels.DropByPosition {
		t.Fatal("moe's constants differ from the kernels'")
	}
	cfg := Config{Hidden: 4, FFN: 4, Experts: 4, TopK: 2, CapacityFactor: 1, Dtype: tensor.Float64}
	l, err := New(G.NewGraph(), "moe", cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Config(); got.Activation != SwiGLU || got.DropPolicy != DropByProb {
		t.Errorf("zero Activation and DropPolicy became %v and %v, want SwiGLU and prob", got.Activation, got.DropPolicy)
	}
	g, err := l.Config().geometry(8, cfg.CapacityFactor)
	if err != nil {
		t.Fatal(err)
	}
	if g.Drop != kernels.DropByProb {
		t.Errorf("geometry of a zero DropPolicy drops by %v, want prob", g.Drop)
	}
	if d := (Config{Activation: GELU, DropPolicy: DropByPosition}).WithDefaults(); d.Activation != GELU || d.DropPolicy != DropByPosition {
		t.Errorf("withDefaults changed set fields to %v and %v", d.Activation, d.DropPolicy)
	}
}

// TestConfigString: a Config prints with fmt's verbs, a zero dtype as "default" (fmt used to
// print a recovered panic: a zero tensor.Dtype cannot print itself), a set one by name; a zero
// Activation as "default" too, as a zero DropPolicy does (it printed "Activation(0)").
func TestConfigString(t *testing.T) {
	cases := []struct {
		c    Config
		want []string
	}{
		{Config{Hidden: 4, FFN: 8, Experts: 2, TopK: 1},
			[]string{"{Hidden:4 FFN:8 ", " Dtype:default ", " RouterDtype:default ", " Score:softmax ",
				" Activation:default ", " DropPolicy:default "}},
		{Config{Hidden: 4, Dtype: tensor.Float64, RouterDtype: tensor.Float32, Score: Sigmoid, Activation: GELU},
			[]string{" Dtype:float64 ", " RouterDtype:float32 ", " Score:sigmoid ", " Activation:GELU "}},
	}
	for i, tc := range cases {
		for _, verb := range []string{"%v", "%+v", "%s"} {
			got := fmt.Sprintf(verb, tc.c)
			if strings.Contains(got, "PANIC") || !strings.HasSuffix(got, "}") {
				t.Errorf("case %d %s: %q", i, verb, got)
			}
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("case %d %s: %q lacks %q", i, verb, got, w)
				}
			}
		}
	}
}

// TestWeightBytes: the bytes of a layer's weights, counted by hand (W1 holds gate and up for
// SwiGLU: three matrices of E·H·F, one of H·S each for the shared experts; the router H·E and
// its bias E in the router's dtype), and equal to the bytes of the values New allocates.
func TestWeightBytes(t *testing.T) {
	for _, c := range []struct {
		cfg  Config
		want float64
	}{
		{Config{Hidden: 4, FFN: 3, Experts: 2, TopK: 2}, 3*2*4*3*4 + (4*2+2)*4},
		{Config{Hidden: 4, FFN: 3, Experts: 2, TopK: 2, Activation: GELU, Dtype: tensor.Float64}, 2*2*4*3*8 + (4*2+2)*8},
		{Config{Hidden: 8, FFN: 4, Experts: 4, TopK: 2, SharedFFN: 6, Dtype: bfloat16.Dtype, RouterDtype: tensor.Float32}, 3*(4*8*4+8*6)*2 + (8*4+4)*4},
	} {
		if got := c.cfg.WeightBytes(); got != c.want {
			t.Errorf("%+v: WeightBytes %v, want %v", c.cfg, got, c.want)
		}
		l, err := New(G.NewGraph(), "moe", c.cfg)
		if err != nil {
			t.Fatal(err)
		}
		var sum float64
		for _, n := range l.Learnables() {
			sum += float64(n.Shape().TotalSize()) * float64(n.Dtype().Size())
		}
		if sum > c.want || c.want-sum > float64(c.cfg.Experts)*float64(c.cfg.WithDefaults().RouterDtype.Size()) {
			t.Errorf("%+v: the learnables hold %v bytes, want %v (or that less the expert bias, not learned)", c.cfg, sum, c.want)
		}
	}
}
