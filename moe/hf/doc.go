// Package hf loads the MoE blocks of Hugging Face transformers checkpoints into gomoe layers:
// Mixtral (MixtralSparseMoeBlock), Qwen3-MoE (Qwen3MoeSparseMoeBlock), OLMoE
// (OlmoeSparseMoeBlock) and DeepSeek-V3 (DeepseekV3MoE), from safetensors files (read with
// github.com/gomoe/gomoe/safetensors), in the fused expert layout transformers v5 writes
// (experts.gate_up_proj, experts.down_proj) or the per-expert nn.Linear weights of older
// checkpoints (experts.N.gate_proj/up_proj/down_proj, or Mixtral's experts.N.w1/w3/w2).
//
//	cfg, err := hf.ReadConfig("ckpt/config.json")
//	mc, err := cfg.MoEConfig()                  // the block's math as moe.Config options
//	ts, err := safetensors.Open(shards...)      // gomoe/safetensors: headers only; Load reads the block's tensors
//	defer ts.Close()
//	layer, err := hf.Load(g, "layer3", mc, ts, "model.layers.3.mlp.")
//
// # Where transformers and gomoe differ
//
// The blocks' routing is expressed with moe.Config options, not special cases:
//
//   - Mixtral, and Qwen3-MoE/OLMoE with norm_topk_prob, take a softmax over all E experts in
//     float32, keep the top K and renormalise them. That is, value and gradient, the softmax
//     over the K chosen logits that moe.Softmax computes (the full softmax's denominator
//     cancels), so the layer needs no extra option. Without norm_topk_prob the probabilities
//     stay those of the softmax over all E: moe.Config.PreSoftmax.
//   - DeepSeek-V3 routes on sigmoid scores plus e_score_correction_bias (selection only:
//     moe.Config.ExpertBias, Layer.Bias), keeps the topk_group groups whose top-2 biased scores
//     sum highest (moe.Config.Groups, GroupsKept; gomoe sums the top K/GroupsKept, which is 2
//     for DeepSeek-V3's 8 and 4, and MoEConfig refuses other ratios), renormalises the K
//     chosen sigmoid scores (transformers adds 1e-20 to the sum) and multiplies them by
//     routed_scaling_factor (moe.Config.ScalingFactor), then adds the shared experts
//     (moe.Config.SharedFFN). transformers fills the dropped groups' scores with 0, gomoe with
//     −inf: they pick the same experts whenever the kept biased scores are positive (always
//     for a correction bias above −σ of the scores); with a more negative bias transformers
//     may pick an expert of a dropped group, which gomoe never does.
//   - transformers' DeepSeek-V3 router computes its logits in float32 whatever the model's
//     dtype; Mixtral, Qwen3-MoE and OLMoE compute them in the model dtype and the softmax in
//     float32. gomoe's router works in moe.Config.RouterDtype (float32 for a bfloat16 layer).
//   - Mixtral's router_jitter_noise multiplies the whole block input (router and experts) by
//     noise in training; moe.Config.JitterEps multiplies the router input only, so MoEConfig
//     leaves it off.
//   - The balancing loss of transformers' load_balancing_loss_func counts each of a token's K
//     choices as a full token: for one layer it is K times moe's AuxLoss, so
//     AuxLossCoeff = K·router_aux_loss_coef gives transformers' value. MoEConfig sets no loss.
//
// # Parity with transformers
//
// testdata/ holds, for each of the four blocks built by transformers at a small size with
// random weights, the weights under transformers' names, an input, the block's output, and
// the gradients of the input and of every weight for a fixed random upstream gradient
// (float32, computed by torch on the CPU), plus the Mixtral and Qwen3-MoE weights converted
// to per-expert names. TestParity loads each block with MoEConfig and Load and checks the
// output and all gradients within 1e-4 of the largest value (at least 1e-4 absolute): the
// float32 rounding of two summation orders, far below any routing or layout error. The data
// comes from make_testdata.py beside this file, which also checks transformers' output
// against its own implementation of the routing above (testdata/VERSIONS.txt names the
// versions that made it); regenerate it on a machine with torch, transformers 5.x and
// safetensors with
//
//	python3 moe/hf/make_testdata.py moe/hf/testdata
package hf
