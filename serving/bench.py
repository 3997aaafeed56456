"""`clinchat-serve bench`: this engine against Hugging Face `generate`, same weights,
same quantization, same prompts, in one run; writes JSON.

Engine side: at concurrency c, c requests are submitted at once to the running engine
(in-process, no HTTP), each with a random prompt of --prompt-tokens tokens and exactly
--max-tokens new tokens (EOS ignored). TTFT and time per output token are per request.

HF side: the same c prompts as one batch to `generate` (static batching: no padding is
needed as all prompts have the same length; greedy, EOS ignored), with a streamer that
timestamps every step. Every request of a batch has the same TTFT and TPOT, so its p50
and p95 are equal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from serving.engine import Engine, Request, load_model
from serving.sampling import SamplingParams


def _pct(values: list[float], q: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def _summary(
    side: str,
    c: int,
    tokens: int,
    wall: float,
    ttft: list[float],
    tpot: list[float],
    peak: int | None,
) -> dict[str, Any]:
    return {
        "side": side,
        "concurrency": c,
        "requests": len(ttft),
        "output_tokens": tokens,
        "wall_s": round(wall, 4),
        "output_tokens_per_s": round(tokens / wall, 2),
        "ttft_p50_ms": round(_pct(ttft, 50) * 1e3, 3),
        "ttft_p95_ms": round(_pct(ttft, 95) * 1e3, 3),
        "tpot_p50_ms": round(_pct(tpot, 50) * 1e3, 3) if tpot else None,
        "tpot_p95_ms": round(_pct(tpot, 95) * 1e3, 3) if tpot else None,
        "peak_gpu_memory_bytes": peak,
    }


def _reset_peak() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _peak() -> int | None:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None


def make_prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    low = min(16, vocab // 2)  # skip the first ids (special tokens in most vocabularies)
    return torch.randint(low, vocab, (n, length), generator=gen).tolist()


def run_engine(engine: Engine, prompts: list[list[int]], max_tokens: int) -> dict[str, Any]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    done = threading.Semaphore(0)
    reqs: list[Request] = []

    def emit(kind: str, value: int | str | None) -> None:
        if kind != "token":
            done.release()

    _reset_peak()
    start = time.monotonic()
    for p in prompts:
        req = Request(list(p), params, emit)
        reqs.append(req)
        engine.submit(req)
    for _ in reqs:
        done.acquire()
    wall = time.monotonic() - start
    ttft = [r.first_token_time - r.arrival for r in reqs if r.first_token_time]
    tpot = [
        (r.last_token_time - r.first_token_time) / (len(r.output_ids) - 1)
        for r in reqs
        if r.first_token_time and r.last_token_time and len(r.output_ids) > 1
    ]
    tokens = sum(len(r.output_ids) for r in reqs)
    return _summary("clinchat", len(prompts), tokens, wall, ttft, tpot, _peak())


def bench_engine(
    args: argparse.Namespace, concurrency: list[int], prompts: list[list[int]]
) -> list[dict[str, Any]]:
    lm = load_model(
        args.model_dir,
        quantization=args.quantization,
        device=args.device,
        dtype=args.dtype,
        max_model_len=args.prompt_tokens + args.max_tokens + 1,
        max_num_seqs=max(concurrency),
        prefill_chunk=args.prefill_chunk,
        cuda_graphs=args.cuda_graphs,
    )
    try:
        run_engine(lm.engine, prompts[:1], min(args.max_tokens, 8))  # warm-up
        return [run_engine(lm.engine, prompts[:c], args.max_tokens) for c in concurrency]
    finally:
        lm.engine.stop()
        del lm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class _StepClock:
    """A transformers streamer that only records when each generate step ends."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.times.append(time.monotonic())

    def end(self) -> None:
        pass


def bench_hf(
    args: argparse.Namespace, concurrency: list[int], prompts: list[list[int]]
) -> list[dict[str, Any]]:
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, GenerationConfig

    from serving.engine import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if args.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
    elif args.quantization == "int8":
        kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, device_map=str(device), local_files_only=True, **kwargs
    ).eval()
    results = []

    def one(c: int, new: int) -> tuple[float, list[float]]:
        ids = torch.tensor(prompts[:c], device=device)
        cfg = GenerationConfig(
            max_new_tokens=new,
            min_new_tokens=new,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        clock = _StepClock()
        start = time.monotonic()
        with torch.inference_mode():
            model.generate(
                ids, attention_mask=torch.ones_like(ids), generation_config=cfg, streamer=clock
            )
        # generate() hands the streamer the prompt first, then each step's new tokens.
        return time.monotonic() - start, [start, *clock.times[1:]]

    one(1, min(args.max_tokens, 8))  # warm-up
    for c in concurrency:
        _reset_peak()
        wall, times = one(c, args.max_tokens)
        ttft = times[1] - times[0]
        tpot = (times[-1] - times[1]) / max(len(times) - 2, 1)
        results.append(
            _summary("hf", c, c * args.max_tokens, wall, [ttft] * c, [tpot] * c, _peak())
        )
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clinchat-serve bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--quantization", choices=["none", "nf4", "int8"], default="none")
    p.add_argument("--concurrency", default="1,8,32,64", help="comma-separated concurrency levels")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--baseline", choices=["hf", "none"], default="hf")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", "bfloat16", "float16", "float32"], default="auto")
    p.add_argument("--prefill-chunk", type=int, default=512)
    p.add_argument("--cuda-graphs", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="JSON file (default: standard output)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    config = json.loads((args.model_dir / "config.json").read_text())
    prompts = make_prompts(max(concurrency), args.prompt_tokens, config["vocab_size"], args.seed)
    results = bench_engine(args, concurrency, prompts)
    if args.baseline == "hf":
        results += bench_hf(args, concurrency, prompts)
        gc.collect()
    cuda = torch.cuda.is_available() and args.device != "cpu"
    report = {
        "meta": {
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "model_dir": str(args.model_dir),
            "quantization": args.quantization,
            "prompt_tokens": args.prompt_tokens,
            "max_tokens": args.max_tokens,
            "concurrency": concurrency,
            "device": (torch.cuda.get_device_name() if cuda else "cpu"),
            "torch": torch.__version__,
            "cuda_graphs": args.cuda_graphs and cuda,
            "hidden_size": config["hidden_size"],
            "layers": config["num_hidden_layers"],
        },
        "results": results,
    }
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
