#!/usr/bin/python3
"""Trains Tessera's trained fixture with Debian's python3-torch (CPU): a small Llama-architecture model on English man
pages, then LoRA adapters on German, French and Spanish man pages, and writes them in Hugging Face / PEFT layout.

    train.py PLAN.json

PLAN.json (written by build.ts) names the token files, the held-out windows, the hyperparameters and the output
directories. Everything is seeded; training runs matmuls in bfloat16 autocast, held-out losses in float32.

The model is the Hugging Face Llama computation: RMSNorm (x * rsqrt(mean(x^2) + eps) * w), grouped-query attention
with rotate-half rotary embeddings, SwiGLU MLP (down(silu(gate(x)) * up(x))), final norm, LM head tied to the
embeddings. A LoRA linear is PEFT's: y = W x + (alpha / r) * B (A x), A initialised as PEFT does (Kaiming uniform with
a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in))), B zero.
"""
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------- safetensors (written from the format's description)

def write_safetensors(path, tensors):
    """tensors: dict name -> float32 torch tensor. 8-byte little-endian header length, JSON header, raw data."""
    header = {"__metadata__": {"format": "pt"}}
    offset = 0
    blobs = []
    for name in sorted(tensors):
        data = tensors[name].detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(tensors[name].shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * ((8 - len(encoded) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(encoded)))
        f.write(encoded)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, value):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- model

def rotary_tables(theta, max_positions, head_dim):
    """cos/sin [max_positions, head_dim/2], computed in float64 and rounded once (as Tessera's graph does)."""
    i = np.arange(head_dim // 2, dtype=np.float64)
    inv_freq = theta ** (-2.0 * i / head_dim)
    angles = np.arange(max_positions, dtype=np.float64)[:, None] * inv_freq[None, :]
    return torch.from_numpy(np.cos(angles).astype(np.float32)), torch.from_numpy(np.sin(angles).astype(np.float32))


def apply_rotary(x, cos, sin):
    """x [B, heads, T, D]; cos/sin [T, D/2]: rotate-half layout."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, size, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)) * self.weight


class LoraLinear(nn.Module):
    """PEFT's LoRA layer around a frozen linear: y = base(x) + scaling * lora_B(lora_A(x))."""

    def __init__(self, base, rank, alpha, generator):
        super().__init__()
        self.base = base
        self.lora_A = nn.Linear(base.in_features, rank, bias=False)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False)
        bound = 1.0 / math.sqrt(base.in_features)  # kaiming_uniform_(a=sqrt(5)) on [rank, in]
        with torch.no_grad():
            self.lora_A.weight.uniform_(-bound, bound, generator=generator)
            self.lora_B.weight.zero_()
        self.scaling = alpha / rank

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(x)) * self.scaling


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, d = c["hidden_size"], c["head_dim"]
        self.heads, self.kv_heads, self.head_dim = c["num_attention_heads"], c["num_key_value_heads"], d
        self.q_proj = nn.Linear(h, self.heads * d, bias=False)
        self.k_proj = nn.Linear(h, self.kv_heads * d, bias=False)
        self.v_proj = nn.Linear(h, self.kv_heads * d, bias=False)
        self.o_proj = nn.Linear(self.heads * d, h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        group = self.heads // self.kv_heads
        k = k.repeat_interleave(group, dim=1)  # query head h reads kv head h // group
        v = v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)).float() / math.sqrt(self.head_dim)
        probs = scores.masked_fill(mask, float("-inf")).softmax(-1).to(v.dtype)
        return self.o_proj((probs @ v).transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Mlp(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.input_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.self_attn = Attention(c)
        self.post_attention_layernorm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])
        self.mlp = Mlp(c)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embed_tokens = nn.Embedding(c["vocab_size"], c["hidden_size"])
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c["num_hidden_layers"])])
        self.norm = RMSNorm(c["hidden_size"], c["rms_norm_eps"])


class LlamaForCausalLM(nn.Module):
    """Parameter names are the Hugging Face checkpoint names (model.layers.N.self_attn.q_proj.weight, ...)."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.model = Body(c)
        cos, sin = rotary_tables(c["rope_theta"], c["max_position_embeddings"], c["head_dim"])
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def forward(self, ids):
        t = ids.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x, cos, sin, mask)
        x = self.model.norm(x)
        return x @ self.model.embed_tokens.weight.to(x.dtype).t()  # tied LM head


def init_weights(model, seed):
    """N(0, 0.02) for embeddings and linears; residual outputs (o_proj, down_proj) / sqrt(2 * layers); norms 1."""
    g = torch.Generator().manual_seed(seed)
    layers = model.config["num_hidden_layers"]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                p.fill_(1.0)
                continue
            std = 0.02 / math.sqrt(2 * layers) if (".o_proj." in name or ".down_proj." in name) else 0.02
            p.normal_(0.0, std, generator=g)


def add_lora(model, rank, alpha, seed):
    g = torch.Generator().manual_seed(seed)
    modules = {}
    for i, layer in enumerate(model.model.layers):
        for parent in (layer.self_attn, layer.mlp):
            for target in TARGETS:
                if hasattr(parent, target):
                    lora = LoraLinear(getattr(parent, target), rank, alpha, g)
                    setattr(parent, target, lora)
                    block = "mlp" if parent is layer.mlp else "self_attn"
                    modules[f"base_model.model.model.layers.{i}.{block}.{target}"] = lora
    return modules


def remove_lora(model):
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for target in TARGETS:
                m = getattr(parent, target, None)
                if isinstance(m, LoraLinear):
                    setattr(parent, target, m.base)


# ---------------------------------------------------------------- data, training, evaluation

def load_tokens(path):
    return torch.from_numpy(np.fromfile(path, dtype="<u2").astype(np.int64))


def lr_at(step, steps, peak, warmup, floor):
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor * peak + (1 - floor) * peak * 0.5 * (1 + math.cos(math.pi * progress))


def train(model, params, tokens, h, seed, label):
    """AdamW on random windows of the token stream; returns (seconds, last losses)."""
    rng = np.random.default_rng(seed)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": h["weightDecay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=h["lr"], betas=(0.9, 0.95), eps=1e-8,
    )
    b, t = h["batchSequences"], h["sequenceTokens"]
    losses = []
    started = time.time()
    model.train()
    for step in range(h["steps"]):
        starts = rng.integers(0, len(tokens) - t - 1, size=b)
        batch = torch.stack([tokens[s : s + t + 1] for s in starts])
        for group in opt.param_groups:
            group["lr"] = lr_at(step, h["steps"], h["lr"], h["warmupSteps"], h["minLrFraction"])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == h["steps"] - 1:
            elapsed = time.time() - started
            print(f"[train] {label} step {step + 1}/{h['steps']} loss {loss.item():.4f} ({elapsed:.0f} s, "
                  f"{(step + 1) * b * t / elapsed:.0f} tok/s)", flush=True)
    return time.time() - started, losses


@torch.no_grad()
def heldout_loss(model, windows):
    """Mean next-token negative log-likelihood (nats) over every prediction of every window, float32 forward."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), 8):
        chunk = torch.tensor(windows[i : i + 8], dtype=torch.int64)
        logits = model(chunk[:, :-1]).float()
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), chunk[:, 1:].reshape(-1), reduction="none")
        total += nll.double().sum().item()
        count += nll.numel()
    return total / count


def save_adapter(directory, modules, rank, alpha, base_name, factor_of):
    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for name, m in modules.items():
        tensors[f"{name}.lora_A.weight"] = factor_of(m, "A")
        tensors[f"{name}.lora_B.weight"] = factor_of(m, "B")
    write_safetensors(os.path.join(directory, "adapter_model.safetensors"), tensors)
    write_json(os.path.join(directory, "adapter_config.json"), {
        "alpha_pattern": {},
        "auto_mapping": None,
        "base_model_name_or_path": base_name,
        "bias": "none",
        "fan_in_fan_out": False,
        "inference_mode": True,
        "init_lora_weights": True,
        "layer_replication": None,
        "layers_pattern": None,
        "layers_to_transform": None,
        "loftq_config": {},
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "megatron_config": None,
        "megatron_core": "megatron.core",
        "modules_to_save": None,
        "peft_type": "LORA",
        "r": rank,
        "rank_pattern": {},
        "revision": None,
        "target_modules": sorted(TARGETS),
        "task_type": "CAUSAL_LM",
        "use_dora": False,
        "use_rslora": False,
    })


def main():
    plan = json.load(open(sys.argv[1], encoding="utf-8"))
    torch.set_num_threads(plan["threads"])
    torch.manual_seed(plan["seed"])
    c = plan["config"]
    heldout = {d: json.load(open(p, encoding="utf-8"))["windows"] for d, p in plan["heldoutFiles"].items()}
    results = {"torch": torch.__version__, "threads": plan["threads"], "base": {}, "adapters": {}}

    model = LlamaForCausalLM(c)
    init_weights(model, plan["seed"])
    params = list(model.parameters())
    print(f"[train] base: {sum(p.numel() for p in params):,} parameters", flush=True)
    seconds, losses = train(model, params, load_tokens(plan["trainTokenFiles"][plan["baseDomain"]]), plan["base"], plan["seed"], "base")
    for p in params:
        p.requires_grad_(False)
    base_dir = plan["baseDir"]
    os.makedirs(base_dir, exist_ok=True)
    write_safetensors(os.path.join(base_dir, "model.safetensors"), {k: v for k, v in model.state_dict().items()})
    base_losses = {d: heldout_loss(model, w) for d, w in heldout.items()}
    print(f"[train] base held-out loss: {json.dumps(base_losses)}", flush=True)
    results["base"] = {"trainSeconds": seconds, "finalTrainLoss": float(np.mean(losses[-10:])), "heldoutLoss": base_losses,
                       "parameters": sum(p.numel() for p in params)}

    for a in plan["adapters"]:
        modules = add_lora(model, a["rank"], a["loraAlpha"], a["seed"])
        initial = {n: (m.lora_A.weight.detach().clone(), m.lora_B.weight.detach().clone()) for n, m in modules.items()}
        lora_params = [p for m in modules.values() for p in (m.lora_A.weight, m.lora_B.weight)]
        seconds, losses = train(model, lora_params, load_tokens(plan["trainTokenFiles"][a["domain"]]), a["training"], a["seed"], a["name"])
        loss = heldout_loss(model, heldout[a["domain"]])
        print(f"[train] {a['name']}: held-out loss on {a['domain']} {loss:.4f} (base {base_losses[a['domain']]:.4f})", flush=True)
        save_adapter(a["dir"], modules, a["rank"], a["loraAlpha"], c["_name_or_path"],
                     lambda m, k: (m.lora_A if k == "A" else m.lora_B).weight)
        save_adapter(a["initialDir"], modules, a["rank"], a["loraAlpha"], c["_name_or_path"],
                     lambda m, k, name_of={id(m): n for n, m in modules.items()}: initial[name_of[id(m)]][0 if k == "A" else 1])
        results["adapters"][a["name"]] = {"trainSeconds": seconds, "finalTrainLoss": float(np.mean(losses[-10:])),
                                          "heldoutLoss": loss, "baseHeldoutLoss": base_losses[a["domain"]],
                                          "parameters": sum(p.numel() for p in lora_params)}
        remove_lora(model)
    write_json(plan["resultsFile"], results)


if __name__ == "__main__":
    main()
