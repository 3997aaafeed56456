"""The benchmark on the CPU with the tiny model (small numbers; the real one needs a GPU)."""

from __future__ import annotations

import json
from pathlib import Path

from serving.bench import main


def test_bench_cpu_with_hf_baseline(tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    rc = main(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--concurrency",
            "1,3",
            "--prompt-tokens",
            "16",
            "--max-tokens",
            "6",
            "--device",
            "cpu",
            "--output",
            str(out),
        ]
    )
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["meta"]["device"] == "cpu"
    rows = {(r["side"], r["concurrency"]): r for r in report["results"]}
    assert set(rows) == {("clinchat", 1), ("clinchat", 3), ("hf", 1), ("hf", 3)}
    for row in rows.values():
        assert row["output_tokens"] == 6 * row["concurrency"]
        for key in (
            "output_tokens_per_s",
            "ttft_p50_ms",
            "ttft_p95_ms",
            "tpot_p50_ms",
            "tpot_p95_ms",
        ):
            assert row[key] > 0, key
        assert row["peak_gpu_memory_bytes"] is None
