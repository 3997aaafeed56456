"""roles/monitoring/files/clinchat-gpu-metrics: nvidia-smi's CSV into node exporter's
textfile format. This machine has no GPU: a stand-in `nvidia-smi` on PATH prints what
the real one prints for `--query-gpu=... --format=csv,noheader,nounits` (two cards, one
without a temperature sensor), and one that fails. The output is parsed by
prometheus_client's own parser, as node exporter would read it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

WRITER = Path(__file__).resolve().parents[2] / "roles/monitoring/files/clinchat-gpu-metrics"
TWO_CARDS = (
    "0, GPU-11111111-2222-3333-4444-555555555555, 87, 61234, 81559, 64\n"
    "1, GPU-66666666-7777-8888-9999-000000000000, 0, 3, 81559, [N/A]\n"
)


def run(tmp_path: Path, nvidia_smi: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    bin_dir, out = tmp_path / "bin", tmp_path / "textfile"
    bin_dir.mkdir()
    out.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\n{nvidia_smi}\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(  # noqa: S603
        [sys.executable, str(WRITER), str(out)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    prom = out / "clinchat_gpu.prom"
    assert prom.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in out.iterdir()] == ["clinchat_gpu.prom"], "a temporary file was left"
    samples = {
        (s.name, s.labels.get("gpu")): s.value
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    return result, samples


def test_every_card_is_reported_in_base_units(tmp_path: Path) -> None:
    escaped = TWO_CARDS.replace("\n", "\\n")
    result, samples = run(tmp_path, f"printf '{escaped}'")
    assert result.returncode == 0, result.stderr
    assert samples[("clinchat_gpu_metrics_up", None)] == 1
    assert samples[("clinchat_gpu_utilization_ratio", "0")] == pytest.approx(0.87)
    assert samples[("clinchat_gpu_memory_used_bytes", "0")] == 61234 * 1024 * 1024
    assert samples[("clinchat_gpu_memory_total_bytes", "1")] == 81559 * 1024 * 1024
    assert samples[("clinchat_gpu_temperature_celsius", "0")] == 64
    # "[N/A]": no sample rather than a made-up value.
    assert ("clinchat_gpu_temperature_celsius", "1") not in samples


def test_a_failing_nvidia_smi_says_so(tmp_path: Path) -> None:
    result, samples = run(tmp_path, "echo 'NVIDIA-SMI has failed' >&2; exit 9")
    assert result.returncode == 1
    assert "nvidia-smi failed" in result.stderr
    assert samples == {("clinchat_gpu_metrics_up", None): 0}
