"""The engine against transformers: greedy output token for token (CPU, float32)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from serving.engine import LoadedModel, load_model
from serving.graphs import batch_buckets
from serving.sampling import SamplingParams

PROMPTS = [
    "The quick brown fox",
    "Hospitals keep their servers in a locked room with cooling and backup power. Please "
    "wash your hands before and after you visit the ward. The library opens at nine.",
    "A",
    "Numbers: zero one two three four five six seven eight nine ten eleven twelve.",
    "Water boils",
]
N = 24
GREEDY = SamplingParams(max_tokens=N, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def hf_model(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def engine_model(tiny_model_dir: Path) -> Iterator[LoadedModel]:
    # A small prefill chunk so the long prompt is prefilled in several pieces.
    lm = load_model(
        tiny_model_dir, device="cpu", max_model_len=256, max_num_seqs=8, prefill_chunk=16
    )
    yield lm
    lm.engine.stop()


def hf_greedy(model, ids: list[int], n: int = N) -> list[int]:  # type: ignore[no-untyped-def]
    from transformers import GenerationConfig

    x = torch.tensor([ids])
    cfg = GenerationConfig(max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=None)
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=cfg)
    return out[0, len(ids) :].tolist()


@pytest.fixture(scope="module")
def references(hf_model, engine_model: LoadedModel) -> list[list[int]]:  # type: ignore[no-untyped-def]
    return [hf_greedy(hf_model, engine_model.tokenizer.encode(p)) for p in PROMPTS]


def test_tokenizer_and_chat_template_match_transformers(
    tiny_model_dir: Path, engine_model: LoadedModel
) -> None:
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi!"}]
    ref = hf_tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ref_ids = hf_tok(ref, add_special_tokens=False).input_ids
    assert engine_model.tokenizer.apply_chat_template(msgs) == ref_ids
    for p in PROMPTS:
        assert engine_model.tokenizer.encode(p) == hf_tok(p).input_ids


def test_greedy_equals_transformers_alone(
    engine_model: LoadedModel, references: list[list[int]]
) -> None:
    for prompt, ref in zip(PROMPTS, references, strict=True):
        out, reason = engine_model.engine.generate(engine_model.tokenizer.encode(prompt), GREEDY)
        assert reason == "length"
        assert out == ref, prompt


def test_greedy_equals_transformers_batched(
    engine_model: LoadedModel, references: list[list[int]]
) -> None:
    engine = engine_model.engine
    results: dict[int, list[int]] = {}
    engine.pause()  # everyone joins before the first step, so all run in one batch

    def run(i: int) -> None:
        results[i] = engine.generate(engine_model.tokenizer.encode(PROMPTS[i]), GREEDY)[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(PROMPTS))]
    for t in threads:
        t.start()
    while engine.num_waiting < len(PROMPTS):
        threading.Event().wait(0.01)
    engine.resume()
    for t in threads:
        t.join(timeout=60)
    assert [results[i] for i in range(len(PROMPTS))] == references


def test_requests_join_and_leave_mid_batch(engine_model: LoadedModel, hf_model) -> None:  # type: ignore[no-untyped-def]
    """Staggered arrivals and different lengths: each output still equals its reference."""
    engine, tok = engine_model.engine, engine_model.tokenizer
    lengths = [5, 30, 12, 20]
    results: dict[int, list[int]] = {}

    def run(i: int) -> None:
        params = SamplingParams(max_tokens=lengths[i], temperature=0.0, ignore_eos=True)
        results[i] = engine.generate(tok.encode(PROMPTS[i]), params)[0]

    threads = []
    for i in range(len(lengths)):
        t = threading.Thread(target=run, args=(i,))
        t.start()
        threads.append(t)
        threading.Event().wait(0.003)
    for t in threads:
        t.join(timeout=60)
    for i, n in enumerate(lengths):
        assert results[i] == hf_greedy(hf_model, tok.encode(PROMPTS[i]), n)


def test_tiny_top_p_is_greedy(engine_model: LoadedModel, references: list[list[int]]) -> None:
    params = SamplingParams(max_tokens=N, temperature=1.0, top_p=1e-6, ignore_eos=True)
    out, _ = engine_model.engine.generate(engine_model.tokenizer.encode(PROMPTS[0]), params)
    assert out == references[0]


def test_seeded_sampling_is_independent_of_batch(engine_model: LoadedModel) -> None:
    engine, tok = engine_model.engine, engine_model.tokenizer
    params = SamplingParams(max_tokens=16, temperature=0.9, seed=7, ignore_eos=True)
    alone = engine.generate(tok.encode(PROMPTS[1]), params)[0]
    results: list[list[int]] = []
    noise = threading.Thread(
        target=lambda: engine.generate(
            tok.encode(PROMPTS[0]), SamplingParams(max_tokens=40, temperature=1.0)
        )
    )
    noise.start()
    results.append(engine.generate(tok.encode(PROMPTS[1]), params)[0])
    noise.join()
    assert results[0] == alone


def test_batch_buckets() -> None:
    assert batch_buckets(64) == [1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64]
    assert batch_buckets(4) == [1, 2, 4]
    assert batch_buckets(6) == [1, 2, 4, 6]


def test_quantized_weights_on_cpu(tiny_model_dir: Path) -> None:
    """bitsandbytes 0.50 runs nf4 and int8 on the CPU (pure-torch kernels): check that the
    quantized engine loads, runs, and stays close to the float model."""
    pytest.importorskip("bitsandbytes")
    ids = torch.tensor([[0, 40, 41, 42, 43, 44, 45]])
    pos = torch.arange(ids.shape[1]).unsqueeze(0)
    logits = {}
    for q in ("none", "nf4", "int8"):
        lm = load_model(
            tiny_model_dir, device="cpu", quantization=q, max_model_len=64, max_num_seqs=1
        )
        try:
            with torch.inference_mode():
                logits[q] = lm.engine.model(ids, pos, lm.engine.cache, 0, ids.shape[1])[0, -1]
            out, _ = lm.engine.generate(
                ids[0].tolist(), SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True)
            )
            assert len(out) == 4
        finally:
            lm.engine.stop()
    for q in ("nf4", "int8"):
        cos = torch.nn.functional.cosine_similarity(logits[q], logits["none"], dim=0)
        assert cos > 0.9, (q, float(cos))


@pytest.mark.gpu
def test_cuda_graphs_match_eager(tiny_model_dir: Path) -> None:
    params = SamplingParams(max_tokens=32, temperature=0.0, ignore_eos=True)
    outs = []
    for graphs in (False, True):
        lm = load_model(
            tiny_model_dir,
            device="cuda",
            dtype="float32",
            max_model_len=256,
            max_num_seqs=4,
            cuda_graphs=graphs,
        )
        try:
            outs.append(
                [lm.engine.generate(lm.tokenizer.encode(p), params)[0] for p in PROMPTS[:3]]
            )
            assert lm.engine.runner.use_graphs == graphs
        finally:
            lm.engine.stop()
    assert outs[0] == outs[1]


@pytest.mark.gpu
@pytest.mark.parametrize("quantization", ["none", "nf4", "int8"])
def test_gpu_quantized_runs(tiny_model_dir: Path, quantization: str) -> None:
    lm = load_model(
        tiny_model_dir, device="cuda", quantization=quantization, max_model_len=256, max_num_seqs=4
    )
    try:
        out, reason = lm.engine.generate(lm.tokenizer.encode(PROMPTS[0]), GREEDY)
        assert len(out) == N and reason == "length"
        assert lm.engine.runner.use_graphs == (quantization != "int8")
    finally:
        lm.engine.stop()
