"""Random Llama models for tests and benchmarks (no download, seeded, loadable by transformers).

``tiny``: float32, 2 layers, hidden 64, 4 heads / 2 KV heads, llama3 RoPE scaling, with a
byte-level BPE tokenizer trained here on a small built-in corpus and a Llama-3-style chat
template. ``llama-3.1-8b``: the Llama-3.1-8B shape in bfloat16, written shard by shard so
the weights are never held twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]
BOS, EOS = "<|begin_of_text|>", "<|eot_id|>"

CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

# Written for this project: plain, generic sentences (no names, no patients, no records).
CORPUS = """
The quick brown fox jumps over the lazy dog near the river bank.
A small model can learn a few patterns from a short text like this one.
Hospitals keep their servers in a locked room with cooling and backup power.
Please wash your hands before and after you visit the ward.
The library opens at nine in the morning and closes at six in the evening.
Water boils at one hundred degrees Celsius at sea level.
Numbers: zero one two three four five six seven eight nine ten eleven twelve.
Colors: red orange yellow green blue indigo violet white black gray brown pink.
The weather today is mild with a light breeze and a few clouds in the sky.
Guidelines are reviewed every year by a committee of nurses and doctors.
Always check the label on the bottle and read the instructions twice.
Bread, butter, apples, rice, beans, soup, tea and coffee are on the shopping list.
A good answer cites its sources and says clearly when it does not know.
The system writes an audit record for every question and every answer.
Stairs on the left, elevators on the right, the cafeteria on the ground floor.
Sleep, exercise and a balanced diet help most people feel better.
Hello! How are you today? I am fine, thank you. What can I do for you?
""".strip()

TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 256,
    },
}
LLAMA_31_8B: dict[str, Any] = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rms_norm_eps": 1e-5,
    "vocab_size": 128256,
    "rope_scaling": {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
}
PRESETS = {"tiny": (TINY, torch.float32), "llama-3.1-8b": (LLAMA_31_8B, torch.bfloat16)}


def train_tokenizer(vocab_size: int = 512) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A",
        pair=f"{BOS} $A {BOS} $B",
        special_tokens=[(BOS, bos_id)],
    )
    return tok


def _tensors(
    cfg: dict[str, Any], dtype: torch.dtype, gen: torch.Generator, special_ids: list[int]
) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, random tensor) one at a time. Scaled so the tiny model's logits are peaky
    (greedy ties would make equality tests meaningless) and special tokens are unlikely."""
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd

    def rnd(*shape: int, std: float) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype).normal_(0.0, std, generator=gen)

    yield "model.embed_tokens.weight", rnd(v, d, std=1.0)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", torch.ones(d, dtype=dtype)
        yield p + "self_attn.q_proj.weight", rnd(d, d, std=d**-0.5)
        yield p + "self_attn.k_proj.weight", rnd(kv, d, std=d**-0.5)
        yield p + "self_attn.v_proj.weight", rnd(kv, d, std=d**-0.5)
        yield p + "self_attn.o_proj.weight", rnd(d, d, std=d**-0.5)
        yield p + "post_attention_layernorm.weight", torch.ones(d, dtype=dtype)
        yield p + "mlp.gate_proj.weight", rnd(f, d, std=d**-0.5)
        yield p + "mlp.up_proj.weight", rnd(f, d, std=d**-0.5)
        yield p + "mlp.down_proj.weight", rnd(d, f, std=f**-0.5)
    yield "model.norm.weight", torch.ones(d, dtype=dtype)
    head = rnd(v, d, std=2.0 * d**-0.5)
    head[special_ids] = 0.0  # logit 0 while ordinary tokens spread around it
    yield "lm_head.weight", head


def write_model(
    out: Path, preset: str = "tiny", seed: int = 0, shard_bytes: int = 2 * 2**30
) -> Path:
    """Write config, generation config, tokenizer and safetensors shards into `out`."""
    base, dtype = PRESETS[preset]
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    cfg = dict(base)
    cfg.setdefault("vocab_size", tok.get_vocab_size())
    bos_id, eos_id = tok.token_to_id(BOS), tok.token_to_id(EOS)
    special = [i for i in (tok.token_to_id(t) for t in SPECIAL_TOKENS) if i is not None]
    hf_cfg = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        **cfg,
        "head_dim": cfg["hidden_size"] // cfg["num_attention_heads"],
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
    }
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": bos_id,
                "eos_token_id": [eos_id, tok.token_to_id("<|end_of_text|>")],
                "do_sample": False,
            },
            indent=2,
        )
        + "\n"
    )
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": BOS,
                "eos_token": EOS,
                "pad_token": "<|end_of_text|>",
                "chat_template": CHAT_TEMPLATE,
                "model_max_length": cfg["max_position_embeddings"],
                "clean_up_tokenization_spaces": False,
            },
            indent=2,
        )
        + "\n"
    )
    gen = torch.Generator().manual_seed(seed)
    _write_shards(out, _tensors(cfg, dtype, gen, special), shard_bytes)
    return out


def _write_shards(out: Path, tensors: Iterator[tuple[str, torch.Tensor]], shard_bytes: int) -> None:
    shards: list[list[str]] = []
    weight_map: dict[str, int] = {}
    current: dict[str, torch.Tensor] = {}
    size = total = 0
    tmp_names: list[Path] = []

    def flush() -> None:
        nonlocal current, size
        if current:
            path = out / f"shard-{len(shards):05d}.tmp"
            save_file(current, str(path), metadata={"format": "pt"})
            tmp_names.append(path)
            shards.append(list(current))
            current, size = {}, 0

    for name, tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > shard_bytes:
            flush()
        current[name] = tensor
        weight_map[name] = len(shards)
        size += nbytes
        total += nbytes
    flush()
    if len(tmp_names) == 1:
        tmp_names[0].rename(out / "model.safetensors")
        return
    n = len(tmp_names)
    final = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for tmp, name in zip(tmp_names, final, strict=True):
        tmp.rename(out / name)
    index = {
        "metadata": {"total_size": total},
        "weight_map": {k: final[i] for k, i in sorted(weight_map.items())},
    }
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
