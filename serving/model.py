"""A Llama-family decoder (Llama 2/3.x: grouped-query attention, RoPE with llama3 scaling).

Readable on purpose: one file, no abstraction beyond the transformer itself. Weights come
from a Hugging Face checkpoint; q/k/v and gate/up projections are fused into one matrix
each so a layer runs four matmuls. Linears are plain bf16/fp32 or bitsandbytes nf4/int8.

Every forward reads and writes a slot-based KV cache (kv_cache.KVCache): batch row b of a
forward is cache slot ``slot_start + b``, and each row has its own positions, so prompts
of different lengths and requests at different steps share one batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from serving.kv_cache import KVCache


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    max_position_embeddings: int
    rope_scaling: dict[str, Any] | None = None
    tie_word_embeddings: bool = False
    bos_token_id: int | None = None
    eos_token_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_hf(cls, cfg: dict[str, Any]) -> LlamaConfig:
        arch = cfg.get("model_type", "llama")
        if arch != "llama":
            raise ValueError(f"unsupported model_type {arch!r}: this engine runs Llama models")
        heads = cfg["num_attention_heads"]
        eos = cfg.get("eos_token_id")
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        # transformers >= 5 writes "rope_parameters" (theta inside); older: rope_scaling/theta.
        rope = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
        theta = rope.pop("rope_theta", None) or cfg.get("rope_theta", 10000.0)
        return cls(
            vocab_size=cfg["vocab_size"],
            hidden_size=cfg["hidden_size"],
            intermediate_size=cfg["intermediate_size"],
            num_layers=cfg["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
            rope_theta=theta,
            max_position_embeddings=cfg.get("max_position_embeddings", 4096),
            rope_scaling=rope or None,
            tie_word_embeddings=cfg.get("tie_word_embeddings", False),
            bos_token_id=cfg.get("bos_token_id"),
            eos_token_ids=eos_ids,
        )


def rope_inv_freq(cfg: LlamaConfig) -> Tensor:
    """Inverse frequencies of RoPE, with Llama 3.1's frequency-dependent scaling if set."""
    dim = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    scaling = cfg.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / scaling["factor"]
    if kind != "llama3":
        raise ValueError(f"unsupported rope_scaling type {kind!r}")
    factor = scaling["factor"]
    low, high = scaling["low_freq_factor"], scaling["high_freq_factor"]
    old_len = scaling["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_len / low, old_len / high
    wavelen = 2 * math.pi / inv_freq
    # Long wavelengths (low frequencies) are slowed down by `factor`, short ones kept,
    # and the band between interpolated smoothly.
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return torch.where(medium, smoothed, scaled)


def rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, weight: Tensor, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


LinearFactory = Callable[[Tensor], nn.Module]


class Attention(nn.Module):
    def __init__(self, cfg: LlamaConfig, wqkv: nn.Module, wo: nn.Module, layer: int) -> None:
        super().__init__()
        self.wqkv, self.wo, self.layer = wqkv, wo, layer
        self.n_heads, self.n_kv, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.groups = cfg.num_heads // cfg.num_kv_heads

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        positions: Tensor,
        mask: Tensor,
        cache: KVCache,
        slot_start: int,
        kv_len: int,
    ) -> Tensor:
        b, t, _ = x.shape
        hd, n_kv, g = self.head_dim, self.n_kv, self.groups
        q, k, v = self.wqkv(x).split([self.n_heads * hd, n_kv * hd, n_kv * hd], dim=-1)
        q = q.view(b, t, self.n_heads, hd)
        k = k.view(b, t, n_kv, hd)
        v = v.view(b, t, n_kv, hd)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin

        # Write this step's keys/values at each row's own positions, then attend over the
        # first kv_len positions of the rows' slots (a view: no copy of the cache).
        k_slots = cache.k[self.layer, slot_start : slot_start + b]
        v_slots = cache.v[self.layer, slot_start : slot_start + b]
        rows = torch.arange(b, device=x.device).unsqueeze(1).expand(b, t)
        k_slots[rows, :, positions] = k
        v_slots[rows, :, positions] = v
        keys, values = k_slots[:, :, :kv_len], v_slots[:, :, :kv_len]

        # Grouped-query attention without repeating K/V: the g query heads that share a KV
        # head become g*t query rows against that head.
        q = q.view(b, t, n_kv, g, hd).permute(0, 2, 3, 1, 4).reshape(b, n_kv, g * t, hd)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        out = out.view(b, n_kv, g, t, hd).permute(0, 3, 1, 2, 4).reshape(b, t, -1)
        return self.wo(out)


class MLP(nn.Module):
    def __init__(self, w_gate_up: nn.Module, w_down: nn.Module) -> None:
        super().__init__()
        self.w_gate_up, self.w_down = w_gate_up, w_down

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.w_gate_up(x).chunk(2, dim=-1)
        return self.w_down(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, attn: Attention, mlp: MLP, ln1: RMSNorm, ln2: RMSNorm) -> None:
        super().__init__()
        self.attn, self.mlp, self.ln1, self.ln2 = attn, mlp, ln1, ln2

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        positions: Tensor,
        mask: Tensor,
        cache: KVCache,
        slot_start: int,
        kv_len: int,
    ) -> Tensor:
        x = x + self.attn(self.ln1(x), cos, sin, positions, mask, cache, slot_start, kv_len)
        return x + self.mlp(self.ln2(x))


class Llama(nn.Module):
    def __init__(
        self,
        cfg: LlamaConfig,
        embed: Tensor,
        blocks: list[Block],
        norm: RMSNorm,
        lm_head: nn.Module,
        max_positions: int,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding.from_pretrained(embed, freeze=True)
        self.blocks = nn.ModuleList(blocks)
        self.norm, self.lm_head = norm, lm_head
        freqs = torch.outer(torch.arange(max_positions, dtype=torch.float32), rope_inv_freq(cfg))
        emb = torch.cat((freqs, freqs), dim=-1).to(embed.device)
        self.cos: Tensor
        self.sin: Tensor
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    @property
    def dtype(self) -> torch.dtype:
        return self.embed.weight.dtype

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor,
        cache: KVCache,
        slot_start: int,
        kv_len: int,
        last_only: bool = False,
    ) -> Tensor:
        """tokens, positions: [B, T] -> float32 logits [B, T or 1, vocab].

        Row b uses cache slot slot_start + b and sees cache positions <= its own position.
        """
        x = self.embed(tokens)
        cos = self.cos[positions].to(x.dtype).unsqueeze(2)
        sin = self.sin[positions].to(x.dtype).unsqueeze(2)
        kv_pos = torch.arange(kv_len, device=tokens.device)
        mask = (kv_pos.view(1, 1, -1) <= positions.unsqueeze(-1)).unsqueeze(1)  # [B,1,T,L]
        g = self.cfg.num_heads // self.cfg.num_kv_heads
        b, t = tokens.shape
        mask = mask.expand(b, g, t, kv_len).reshape(b, 1, g * t, kv_len)
        for block in self.blocks:
            x = block(x, cos, sin, positions, mask, cache, slot_start, kv_len)
        if last_only:
            x = x[:, -1:]
        return self.lm_head(self.norm(x)).float()


def make_linear(
    weight: Tensor, quantization: str, device: torch.device, dtype: torch.dtype
) -> nn.Module:
    """A bias-free linear layer holding `weight` [out, in], plain or bitsandbytes-quantized."""
    out_f, in_f = weight.shape
    if quantization == "none":
        lin = nn.Linear(in_f, out_f, bias=False, device="meta")
        lin.weight = nn.Parameter(weight.to(device=device, dtype=dtype), requires_grad=False)
        return lin
    import bitsandbytes as bnb

    if quantization == "nf4":
        lin = bnb.nn.Linear4bit(
            in_f, out_f, bias=False, compute_dtype=dtype, quant_type="nf4", device="meta"
        )
        lin.weight = bnb.nn.Params4bit(weight.to(dtype), requires_grad=False, quant_type="nf4")
        return lin.to(device)  # quantizes on the move
    if quantization == "int8":
        # LLM.int8() with the usual outlier threshold (the same as transformers' default).
        lin = bnb.nn.Linear8bitLt(
            in_f, out_f, bias=False, has_fp16_weights=False, threshold=6.0, device="meta"
        )
        lin.weight = bnb.nn.Int8Params(
            weight.to(torch.float16 if device.type == "cuda" else dtype),
            requires_grad=False,
            has_fp16_weights=False,
        )
        return lin.to(device)
    raise ValueError(f"unknown quantization {quantization!r}")


def build_llama(
    cfg: LlamaConfig,
    get: Callable[[str], Tensor],
    quantization: str,
    device: torch.device,
    dtype: torch.dtype,
    max_positions: int,
) -> Llama:
    """Build the model from HF tensor names, one layer at a time (fusing QKV and gate/up)."""

    def lin(w: Tensor) -> nn.Module:
        return make_linear(w, quantization, device, dtype)

    def norm(name: str) -> RMSNorm:
        return RMSNorm(get(name).to(device=device, dtype=dtype), cfg.rms_norm_eps)

    blocks = []
    for i in range(cfg.num_layers):
        p = f"model.layers.{i}."
        wqkv = torch.cat([get(p + f"self_attn.{n}_proj.weight") for n in "qkv"], dim=0)
        w_gu = torch.cat([get(p + "mlp.gate_proj.weight"), get(p + "mlp.up_proj.weight")], dim=0)
        attn = Attention(cfg, lin(wqkv), lin(get(p + "self_attn.o_proj.weight")), i)
        mlp = MLP(lin(w_gu), lin(get(p + "mlp.down_proj.weight")))
        blocks.append(
            Block(
                attn,
                mlp,
                norm(p + "input_layernorm.weight"),
                norm(p + "post_attention_layernorm.weight"),
            )
        )
    embed = get("model.embed_tokens.weight").to(device=device, dtype=dtype)
    # lm_head stays unquantized, as transformers' bitsandbytes integration leaves it.
    head_w = embed if cfg.tie_word_embeddings else get("lm_head.weight").to(device, dtype)
    lm_head = make_linear(head_w, "none", device, dtype)
    return Llama(cfg, embed, blocks, norm("model.norm.weight"), lm_head, max_positions).eval()
