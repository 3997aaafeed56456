"""Sentence embeddings with a BERT-style encoder (e.g. all-MiniLM-L6-v2), mean-pooled.

Loads a sentence-transformers directory from local disk: config.json (BERT), safetensors,
tokenizer.json, and where present sentence_bert_config.json (max length), 1_Pooling
(must be mean pooling) and modules.json (a Normalize module means unit-length output).
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import Tensor

from serving import loader


@dataclass
class _Layer:
    qkv_w: Tensor
    qkv_b: Tensor
    out_w: Tensor
    out_b: Tensor
    ln1: tuple[Tensor, Tensor]
    up_w: Tensor
    up_b: Tensor
    down_w: Tensor
    down_b: Tensor
    ln2: tuple[Tensor, Tensor]


class BertEmbedder:
    def __init__(self, model_dir: Path, device: torch.device | None = None) -> None:
        loader.verify_manifest(model_dir)
        cfg = loader.read_json(model_dir / "config.json")
        if cfg.get("model_type") not in ("bert", None):
            raise loader.ModelDirError(f"{model_dir}: embedding model must be BERT-style")
        self.device = device or torch.device("cpu")
        self.heads = cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        self.dim = cfg["hidden_size"]
        st_cfg = model_dir / "sentence_bert_config.json"
        max_len = cfg.get("max_position_embeddings", 512)
        if st_cfg.is_file():
            max_len = min(max_len, json.loads(st_cfg.read_text())["max_seq_length"])
        self.max_len = max_len
        pool = model_dir / "1_Pooling" / "config.json"
        if pool.is_file() and not json.loads(pool.read_text()).get("pooling_mode_mean_tokens"):
            raise loader.ModelDirError(f"{model_dir}: only mean pooling is supported")
        modules = model_dir / "modules.json"
        self.normalize = modules.is_file() and any(
            m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text())
        )
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.max_len)
        w = {
            k.removeprefix("bert."): v.float().to(self.device)
            for p in loader.safetensors_files(model_dir)
            for k, v in load_file(str(p)).items()
        }
        e = "embeddings."
        self.word, self.pos, self.type = (
            w[e + "word_embeddings.weight"],
            w[e + "position_embeddings.weight"],
            w[e + "token_type_embeddings.weight"],
        )
        self.emb_ln = (w[e + "LayerNorm.weight"], w[e + "LayerNorm.bias"])
        self.layers = []
        for i in range(cfg["num_hidden_layers"]):
            p = f"encoder.layer.{i}."
            a = p + "attention."
            self.layers.append(
                _Layer(
                    qkv_w=torch.cat([w[a + f"self.{n}.weight"] for n in ("query", "key", "value")]),
                    qkv_b=torch.cat([w[a + f"self.{n}.bias"] for n in ("query", "key", "value")]),
                    out_w=w[a + "output.dense.weight"],
                    out_b=w[a + "output.dense.bias"],
                    ln1=(w[a + "output.LayerNorm.weight"], w[a + "output.LayerNorm.bias"]),
                    up_w=w[p + "intermediate.dense.weight"],
                    up_b=w[p + "intermediate.dense.bias"],
                    down_w=w[p + "output.dense.weight"],
                    down_b=w[p + "output.dense.bias"],
                    ln2=(w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        self._lock = threading.Lock()

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(enc.ids) for enc in self.tokenizer.encode_batch(texts))

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> tuple[Tensor, int]:
        """[N, dim] float32 embeddings and the number of tokens read."""
        encs = self.tokenizer.encode_batch(texts)
        n, length = len(encs), max(len(enc.ids) for enc in encs)
        ids = torch.zeros(n, length, dtype=torch.long)
        types = torch.zeros(n, length, dtype=torch.long)
        mask = torch.zeros(n, length, dtype=torch.bool)
        for i, enc in enumerate(encs):
            ids[i, : len(enc.ids)] = torch.tensor(enc.ids)
            types[i, : len(enc.ids)] = torch.tensor(enc.type_ids)
            mask[i, : len(enc.ids)] = True
        ids, types, mask = ids.to(self.device), types.to(self.device), mask.to(self.device)
        with self._lock:
            x = self.word[ids] + self.type[types] + self.pos[:length].unsqueeze(0)
            x = F.layer_norm(x, (self.dim,), *self.emb_ln, eps=self.eps)
            attn_mask = mask[:, None, None, :]
            hd = self.dim // self.heads
            for layer in self.layers:
                q, k, v = F.linear(x, layer.qkv_w, layer.qkv_b).split(self.dim, dim=-1)
                q, k, v = (t.view(n, length, self.heads, hd).transpose(1, 2) for t in (q, k, v))
                a = F.scaled_dot_product_attention(
                    q, k, v, attn_mask=attn_mask, scale=1.0 / math.sqrt(hd)
                )
                a = a.transpose(1, 2).reshape(n, length, self.dim)
                x = F.layer_norm(
                    x + F.linear(a, layer.out_w, layer.out_b), (self.dim,), *layer.ln1, eps=self.eps
                )
                h = F.gelu(F.linear(x, layer.up_w, layer.up_b))
                x = F.layer_norm(
                    x + F.linear(h, layer.down_w, layer.down_b),
                    (self.dim,),
                    *layer.ln2,
                    eps=self.eps,
                )
            m = mask.unsqueeze(-1).to(x.dtype)
            pooled = (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
            if self.normalize:
                pooled = F.normalize(pooled, p=2, dim=-1)
        return pooled.cpu(), int(mask.sum())
