package hf_test

import (
	"bytes"
	"fmt"
	"log"
	"math"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/gomoe/gomoe/moe/hf"
	"github.com/gomoe/gomoe/safetensors"
)

// ExampleConfig_MoEConfig turns DeepSeek-V3's config.json into the layer's options.
func ExampleConfig_MoEConfig() {
	hc, err := hf.ParseConfig([]byte(`{"model_type": "deepseek_v3", "hidden_size": 7168,
		"moe_intermediate_size": 2048, "n_routed_experts": 256, "num_experts_per_tok": 8,
		"n_group": 8, "topk_group": 4, "routed_scaling_factor": 2.5, "n_shared_experts": 1,
		"norm_topk_prob": true, "hidden_act": "silu"}`))
	if err != nil {
		log.Fatal(err)
	}
	c, err := hc.MoEConfig()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("H=%d F=%d E=%d K=%d %v bias=%v groups=%d/%d scale=%g shared=%d\n",
		c.Hidden, c.FFN, c.Experts, c.TopK, c.Score, c.ExpertBias, c.GroupsKept, c.Groups, c.ScalingFactor, c.SharedFFN)
	// Output:
	// H=7168 F=2048 E=256 K=8 sigmoid bias=true groups=4/8 scale=2.5 shared=2048
}

// ExampleLoad loads a small Mixtral block, written here in transformers v5's fused layout
// (a real checkpoint comes from safetensors.Open), and applies it to a batch of sequences.
func ExampleLoad() {
	const H, F, E = 4, 3, 4
	f32 := func(f func(i int) float64, shape ...int) safetensors.Tensor {
		n := 1
		for _, d := range shape {
			n *= d
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(f(i))
		}
		return safetensors.Tensor{Shape: shape, Data: v}
	}
	wave := func(i int) float64 { return math.Sin(float64(i)) / 2 }
	var buf bytes.Buffer
	err := safetensors.Write(&buf, map[string]safetensors.Tensor{
		"model.layers.0.block_sparse_moe.gate.weight":          f32(wave, E, H),
		"model.layers.0.block_sparse_moe.experts.gate_up_proj": f32(wave, E, 2*F, H),
		"model.layers.0.block_sparse_moe.experts.down_proj":    f32(wave, E, H, F),
	}, nil)
	if err != nil {
		log.Fatal(err)
	}
	ts, err := safetensors.Parse(buf.Bytes())
	if err != nil {
		log.Fatal(err)
	}
	hc, err := hf.ParseConfig([]byte(`{"model_type": "mixtral", "hidden_size": 4,
		"intermediate_size": 3, "num_local_experts": 4, "num_experts_per_tok": 2}`))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := hc.MoEConfig()
	if err != nil {
		log.Fatal(err)
	}
	g := G.NewGraph()
	layer, err := hf.Load(g, "layer0", cfg, ts, "model.layers.0.block_sparse_moe.")
	if err != nil {
		log.Fatal(err)
	}
	x := G.NewTensor(g, tensor.Float32, 3, G.WithShape(2, 3, H), G.WithName("x"),
		G.WithValue(tensor.New(tensor.WithShape(2, 3, H), tensor.WithBacking(make([]float32, 2*3*H)))))
	out, err := layer.Infer(x)
	if err != nil {
		log.Fatal(err)
	}
	m := G.NewTapeMachine(g)
	defer m.Close()
	if err := m.RunAll(); err != nil {
		log.Fatal(err)
	}
	fmt.Println("router", layer.Router.Shape(), "W1", layer.W1.Shape(), "W2", layer.W2.Shape(), "Y", out.Y.Value().Shape())
	// Output:
	// router (4, 4) W1 (4, 4, 6) W2 (4, 3, 4) Y (2, 3, 4)
}
