"""Settings from env and CLI, make-test-model, manifest checks, refusing a bad directory."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from serving import cli, loader
from serving.engine import load_model
from serving.model import LlamaConfig
from serving.sampling import SamplingParams
from serving.settings import Settings
from serving.testmodel import LLAMA_31_8B, write_model


def test_env_and_cli_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CLINCHAT_SERVE_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("CLINCHAT_SERVE_PORT", "9001")
    monkeypatch.setenv("CLINCHAT_SERVE_QUANTIZATION", "nf4")
    monkeypatch.setenv("CLINCHAT_SERVE_CUDA_GRAPHS", "false")
    s = cli.settings_from_args(cli.serve_parser().parse_args(["--port", "9002"]))
    assert (s.model_dir, s.port, s.quantization, s.cuda_graphs) == (tmp_path, 9002, "nf4", False)
    key = tmp_path / "key"
    key.write_text("tok-123\n")
    s = cli.settings_from_args(cli.serve_parser().parse_args(["--api-key-file", str(key)]))
    assert s.api_key is not None and s.api_key.get_secret_value() == "tok-123"
    assert "tok-123" not in repr(s)


def test_every_setting_has_a_cli_option_and_is_documented() -> None:
    readme = (Path(__file__).parents[2] / "serving" / "README.md").read_text()
    options = {a.dest for a in cli.serve_parser()._actions}
    for name in Settings.model_fields:
        assert f"CLINCHAT_SERVE_{name.upper()}" in readme, name
        if name != "api_key":  # secrets only from env/credential files, never argv
            assert name in options, name


def test_manifest_roundtrip(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "m"
    shutil.copytree(tiny_model_dir, d)
    assert loader.verify_manifest(d) is False
    with pytest.raises(loader.ModelDirError, match="required"):
        loader.verify_manifest(d, required=True)
    loader.write_manifest(d)
    assert loader.verify_manifest(d, required=True) is True
    (d / "extra.bin").write_bytes(b"x")
    with pytest.raises(loader.ModelDirError, match="extra.bin: not listed"):
        loader.verify_manifest(d)
    (d / "extra.bin").unlink()
    (d / "tokenizer.json").unlink()
    with pytest.raises(loader.ModelDirError, match="tokenizer.json: missing"):
        loader.verify_manifest(d)


def test_manifest_mismatch_refuses_to_start(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = tmp_path / "tampered"
    shutil.copytree(tiny_model_dir, d)
    loader.write_manifest(d)
    weights = d / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "serving.cli",
            "--model-dir",
            str(d),
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 1
    assert "model.safetensors: SHA-256 mismatch" in proc.stderr
    assert "refusing to start" in proc.stderr
    assert "Uvicorn running" not in proc.stderr
    assert cli.main(["manifest", "--check", str(d)]) == 1


def test_make_test_model_command_loads_in_both(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, LlamaForCausalLM

    d = tmp_path / "cmd"
    assert cli.main(["make-test-model", "--manifest", str(d)]) == 0
    assert loader.verify_manifest(d, required=True)
    cfg = json.loads((d / "config.json").read_text())
    assert (
        cfg["num_hidden_layers"],
        cfg["hidden_size"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["torch_dtype"],
    ) == (2, 64, 4, 2, "float32")
    LlamaForCausalLM.from_pretrained(d)
    tok = AutoTokenizer.from_pretrained(d)
    assert tok.chat_template and tok.bos_token == "<|begin_of_text|>"


def test_seeded_and_sharded(tiny_model_dir: Path, tmp_path: Path) -> None:
    d = write_model(tmp_path / "sharded", shard_bytes=100_000)
    assert (d / "model.safetensors.index.json").is_file()
    assert len(list(d.glob("model-*.safetensors"))) > 1
    params = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    outs = []
    for model_dir in (tiny_model_dir, d):
        lm = load_model(model_dir, device="cpu", max_model_len=64, max_num_seqs=1)
        try:
            outs.append(lm.engine.generate([0, 50, 60, 70], params)[0])
        finally:
            lm.engine.stop()
    assert outs[0] == outs[1]


def test_llama_8b_preset_shape() -> None:
    cfg = LlamaConfig.from_hf({**LLAMA_31_8B, "model_type": "llama"})
    assert (
        cfg.num_layers,
        cfg.hidden_size,
        cfg.num_heads,
        cfg.num_kv_heads,
        cfg.head_dim,
        cfg.vocab_size,
    ) == (32, 4096, 32, 8, 128, 128256)
    per_layer = 4096 * (4096 + 2 * 1024 + 4096) + 3 * 4096 * 14336
    params = 32 * per_layer + 2 * 128256 * 4096
    assert 8.0e9 < params < 8.1e9  # 8.03 B, as Llama-3.1-8B


def test_rope_llama3_matches_transformers(tiny_model_dir: Path) -> None:
    from transformers import LlamaConfig as HFConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from serving.model import rope_inv_freq

    hf_cfg = HFConfig.from_pretrained(tiny_model_dir)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    mine = rope_inv_freq(LlamaConfig.from_hf(hf_cfg.to_dict()))
    torch.testing.assert_close(mine, ref)
