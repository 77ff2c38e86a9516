#!/usr/bin/env python3
"""Parity data for gomoe's Hugging Face loader (package moe/hf, hf_parity_test.go).

Builds four transformers MoE blocks at a small size with random float32 weights on the CPU:

    mixtral      MixtralSparseMoeBlock   softmax, top-2, renormalised
    qwen3_moe    Qwen3MoeSparseMoeBlock  softmax, top-3, norm_topk_prob=True
    olmoe        OlmoeSparseMoeBlock     softmax, top-4, norm_topk_prob=False
    deepseek_v3  DeepseekV3MoE           sigmoid, e_score_correction_bias, 2 groups (1 kept),
                                         top-2, norm_topk_prob, routed_scaling_factor 2.5,
                                         2 shared experts

and writes, for each, OUTDIR/<kind>.safetensors holding

    the block's state_dict under transformers' own names (v5: gate.weight,
    experts.gate_up_proj, experts.down_proj, ...),
    input          [B,S,H]  the block input
    output         [B,S,H]  the block output
    grad_output    [B,S,H]  a fixed random upstream gradient (loss = sum(output * grad_output))
    grad_input     [B,S,H]  d loss / d input
    grad.<name>             d loss / d weight, for every weight that gets a gradient

with the block's config (the config.json keys the loader reads) as JSON in the safetensors
metadata under "config", and "kind" naming the block. Two more files hold the weights only, in
the other expert layout (per-expert Linear weights [out,in]) converted from the same tensors:

    mixtral_per_expert.safetensors    experts.N.w1/w2/w3.weight (the Mixtral checkpoints' names)
    qwen3_moe_per_expert.safetensors  experts.N.gate_proj/up_proj/down_proj.weight

Before writing, the script recomputes every block's output from the weights with its own
reference (the routing math gomoe implements: -inf for masked groups, ties forbidden) and
checks that the inputs leave a clear margin at every top-k and group decision, so that float32
rounding cannot flip a choice between torch and Go. It exits non-zero on any mismatch.

    cd <repo> && python3 moe/hf/make_testdata.py moe/hf/testdata

(torch >= 2.x, transformers 5.x, safetensors; CPU only; deterministic.)
"""
import json
import os
import sys
import traceback

import torch
import torch.nn.functional as F

try:
    import transformers
    from safetensors.torch import save_file
except ImportError as e:  # fail loudly
    sys.exit(f"make_testdata: {e}: needs torch, transformers 5.x and safetensors")

B, S, H, FFN, E = 2, 12, 40, 32, 8  # H != FFN and H != 2*FFN, so every layout is told by shape
MARGIN = 1e-4  # the smallest gap allowed at a top-k or group decision (float32 noise is ~1e-7)
KEYS = [  # config.json keys written to the metadata (those present on the config)
    "model_type", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_local_experts",
    "num_experts", "n_routed_experts", "num_experts_per_tok", "norm_topk_prob", "n_group",
    "topk_group", "routed_scaling_factor", "n_shared_experts", "hidden_act", "router_jitter_noise",
    "topk_method", "scoring_func", "shared_expert_intermediate_size",
]


def small(**kw):
    """Attention/vocab sizes that keep every config valid and small (unused by the blocks)."""
    base = dict(vocab_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                hidden_size=H, hidden_act="silu")
    base.update(kw)
    return base


def build(kind):
    """Returns (block, config, top_k) for one kind."""
    if kind == "mixtral":
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as Block
        cfg = MixtralConfig(**small(intermediate_size=FFN, num_local_experts=E, num_experts_per_tok=2,
                                    router_jitter_noise=0.0))
        k = 2
    elif kind == "qwen3_moe":
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock as Block
        cfg = Qwen3MoeConfig(**small(intermediate_size=2 * FFN, moe_intermediate_size=FFN, num_experts=E,
                                     num_experts_per_tok=3, norm_topk_prob=True, head_dim=H // 4))
        k = 3
    elif kind == "olmoe":
        from transformers import OlmoeConfig
        from transformers.models.olmoe.modeling_olmoe import OlmoeSparseMoeBlock as Block
        cfg = OlmoeConfig(**small(intermediate_size=FFN, num_experts=E, num_experts_per_tok=4,
                                  norm_topk_prob=False))
        k = 4
    elif kind == "deepseek_v3":
        from transformers import DeepseekV3Config
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE as Block
        cfg = DeepseekV3Config(**small(intermediate_size=2 * FFN, moe_intermediate_size=FFN, n_routed_experts=E,
                                       num_experts_per_tok=2, n_group=2, topk_group=1, norm_topk_prob=True,
                                       routed_scaling_factor=2.5, n_shared_experts=2, first_k_dense_replace=0,
                                       q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
                                       v_head_dim=8))
        k = 2
    else:
        raise ValueError(kind)
    for attr in ("_experts_implementation", "experts_implementation"):
        try:  # the plain per-expert loop (a block built outside from_pretrained may have none set)
            setattr(cfg, attr, "eager")
            break
        except Exception:
            pass
    block = Block(cfg).to(torch.float32).eval()
    return block, cfg, k


def init_weights(block, kind, gen):
    """Non-trivial random values in every float parameter and buffer, in place."""
    with torch.no_grad():
        for name, t in list(block.named_parameters()) + list(block.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("e_score_correction_bias"):
                # Positive, so scores + bias > 0: then transformers' masked_fill(0.0) of the dropped
                # groups and gomoe's -inf pick the same experts. The spread (0..0.3) is on the scale
                # of the sigmoid scores, so the bias changes choices.
                t.copy_(torch.rand(t.shape, generator=gen) * 0.3)
                continue
            fan_in = t.shape[-1] if t.dim() >= 2 else t.numel()
            t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)
        if "gate.weight" in dict(block.named_parameters()):
            # Router logits with a spread of ~2 so that the routing is far from uniform.
            w = dict(block.named_parameters())["gate.weight"]
            w.mul_(2.0)


def experts_of(sd, k_ffn):
    """(gate [E,F,H], up [E,F,H], down [E,H,F]) from any of the expert layouts."""
    F_ = k_ffn
    if "experts.gate_up_proj" in sd:
        gu, dn = sd["experts.gate_up_proj"], sd["experts.down_proj"]
        if tuple(gu.shape) == (E, 2 * F_, H):
            gate, up = gu[:, :F_, :], gu[:, F_:, :]
        elif tuple(gu.shape) == (E, H, 2 * F_):  # transposed fused layout
            gate, up = gu[:, :, :F_].transpose(1, 2), gu[:, :, F_:].transpose(1, 2)
        else:
            raise ValueError(f"experts.gate_up_proj has shape {tuple(gu.shape)}")
        if tuple(dn.shape) == (E, H, F_):
            down = dn
        elif tuple(dn.shape) == (E, F_, H):
            down = dn.transpose(1, 2)
        else:
            raise ValueError(f"experts.down_proj has shape {tuple(dn.shape)}")
        return gate.contiguous(), up.contiguous(), down.contiguous()
    if "experts.0.gate_proj.weight" in sd:
        names = ("gate_proj", "up_proj", "down_proj")
    elif "experts.0.w1.weight" in sd:
        names = ("w1", "w3", "w2")
    else:
        raise ValueError(f"no expert weights among {sorted(sd)}")
    return tuple(torch.stack([sd[f"experts.{e}.{n}.weight"] for e in range(E)]) for n in names)


def reference(kind, sd, cfg, k, x2):
    """The block's output for x2 [T,H] from its weights, and the smallest decision margin."""
    wr = sd["gate.weight"]
    logits = x2 @ wr.T
    margins = []
    if kind == "deepseek_v3":
        scores = torch.sigmoid(logits)
        choice = scores + sd["gate.e_score_correction_bias"]
        G, kept = cfg.n_group, cfg.topk_group
        grp = choice.view(-1, G, E // G).topk(2, dim=-1).values.sum(-1)  # [T,G]
        gs = grp.sort(dim=-1, descending=True).values
        margins.append((gs[:, kept - 1] - gs[:, kept]).min())
        keep = grp.topk(kept, dim=-1).indices
        mask = torch.zeros_like(grp, dtype=torch.bool).scatter_(1, keep, True)
        mask = mask.unsqueeze(-1).expand(-1, G, E // G).reshape(-1, E)
        masked = choice.masked_fill(~mask, float("-inf"))
        ms = masked.sort(dim=-1, descending=True).values
        margins.append((ms[:, k - 1] - ms[:, k]).min())
        ids = masked.topk(k, dim=-1).indices
        w = scores.gather(1, ids)
        if cfg.norm_topk_prob:
            w = w / (w.sum(-1, keepdim=True) + 1e-20)
        w = w * cfg.routed_scaling_factor
    else:
        p = torch.softmax(logits, dim=-1)
        ps = p.sort(dim=-1, descending=True).values
        margins.append((ps[:, k - 1] - ps[:, k]).min())
        ids = p.topk(k, dim=-1).indices
        w = p.gather(1, ids)
        norm = True if kind == "mixtral" else bool(cfg.norm_topk_prob)
        if norm:
            w = w / w.sum(-1, keepdim=True)
    gate, up, down = experts_of(sd, FFN)
    y = torch.zeros_like(x2)
    for t in range(x2.shape[0]):
        for j in range(k):
            e = int(ids[t, j])
            h = F.silu(gate[e] @ x2[t]) * (up[e] @ x2[t])
            y[t] += w[t, j] * (down[e] @ h)
    if kind == "deepseek_v3":
        sg, su, sdn = (sd[f"shared_experts.{n}.weight"] for n in ("gate_proj", "up_proj", "down_proj"))
        y = y + (F.silu(x2 @ sg.T) * (x2 @ su.T)) @ sdn.T
    return y, min(float(m) for m in margins), ids


def per_expert(sd, names):
    """The weights with the experts written as per-expert Linear weights [out,in]."""
    gate, up, down = experts_of(sd, FFN)
    out = {n: v.clone().contiguous() for n, v in sd.items() if not n.startswith("experts.")}
    for e in range(E):
        out[f"experts.{e}.{names[0]}.weight"] = gate[e].clone().contiguous()
        out[f"experts.{e}.{names[1]}.weight"] = up[e].clone().contiguous()
        out[f"experts.{e}.{names[2]}.weight"] = down[e].clone().contiguous()
    return out


def one(i, kind, outdir, failures):
    """Builds, runs and writes one block; returns the bytes written."""
    total = 0
    gen = torch.Generator().manual_seed(1000 + i)
    block, cfg, k = build(kind)
    init_weights(block, kind, gen)
    sd = {n: v.detach().clone() for n, v in block.state_dict().items()}
    # An input whose every routing decision has a clear margin.
    for attempt in range(200):
        x = torch.randn(B, S, H, generator=gen)
        ref, margin, ids = reference(kind, sd, cfg, k, x.view(-1, H))
        if margin > MARGIN:
            break
    else:
        failures.append(f"{kind}: no input with routing margins > {MARGIN} in 200 tries")
        return 0
    gup = torch.randn(B, S, H, generator=gen)
    x_in = x.clone().requires_grad_(True)
    block.zero_grad(set_to_none=True)
    out = block(x_in)
    if isinstance(out, (tuple, list)):  # some blocks return (hidden, router_logits)
        out = out[0]
    if tuple(out.shape) != (B, S, H):
        out = out.view(B, S, H)
    (out * gup).sum().backward()
    err = (out.detach().view(-1, H) - ref).abs().max().item()
    scale = ref.abs().max().item()
    if not err <= 1e-4 * max(1.0, scale):
        failures.append(f"{kind}: transformers' output differs from the reference routing math by {err:.3g} "
                        f"(max |y| {scale:.3g}): the block's math is not what gomoe's loader assumes")
    tensors = {n: v.contiguous() for n, v in sd.items()}
    tensors["input"] = x.contiguous()
    tensors["output"] = out.detach().contiguous()
    tensors["grad_output"] = gup.contiguous()
    tensors["grad_input"] = x_in.grad.detach().contiguous()
    ngrad = 0
    for n, p in block.named_parameters():
        if p.grad is not None:
            tensors["grad." + n] = p.grad.detach().contiguous()
            ngrad += 1
    meta_cfg = {key: getattr(cfg, key) for key in KEYS if hasattr(cfg, key)}
    meta = {"kind": kind, "config": json.dumps(meta_cfg, sort_keys=True),
            "transformers": transformers.__version__, "torch": torch.__version__}
    path = os.path.join(outdir, f"{kind}.safetensors")
    save_file(tensors, path, metadata=meta)
    size = os.path.getsize(path)
    total += size
    load = torch.bincount(ids.flatten(), minlength=E).tolist()
    print(f"{path}: {size} bytes; weights {sorted(sd)}; {ngrad} weight grads; "
          f"|y|max {scale:.4g}; ref err {err:.3g}; min margin {margin:.3g}; load {load}")
    alt = None
    if kind == "mixtral":
        alt = per_expert(sd, ("w1", "w3", "w2"))
    elif kind == "qwen3_moe":
        alt = per_expert(sd, ("gate_proj", "up_proj", "down_proj"))
    if alt is not None and "experts.gate_up_proj" in sd:
        apath = os.path.join(outdir, f"{kind}_per_expert.safetensors")
        save_file(alt, apath, metadata=meta)
        total += os.path.getsize(apath)
        print(f"{apath}: {os.path.getsize(apath)} bytes (per-expert layout of the same weights)")
    elif alt is not None:
        failures.append(f"{kind}: transformers did not write the fused layout (names {sorted(sd)}); "
                        "write a fused conversion instead")
    return total


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: python3 moe/hf/make_testdata.py OUTDIR")
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    failures = []
    total = 0
    for i, kind in enumerate(["mixtral", "qwen3_moe", "olmoe", "deepseek_v3"]):
        try:
            total += one(i, kind, outdir, failures)
        except Exception:  # keep going with the other blocks, then fail loudly
            failures.append(f"{kind}: " + traceback.format_exc())
    print(f"total {total} bytes")
    if total > 2 * 1024 * 1024:
        failures.append(f"the files take {total} bytes, over 2 MiB")
    if failures:
        for f in failures:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
