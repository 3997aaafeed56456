"""Local model directories: manifest check, tokenizer, config and safetensors weights.

Nothing here reaches a network: every path is a local file, and a directory that lacks a
file is an error, never a download.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors import safe_open
from tokenizers import Tokenizer

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"


class ModelDirError(RuntimeError):
    """The model directory is missing a file, malformed, or fails its manifest."""


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(bufsize):
            digest.update(chunk)
    return digest.hexdigest()


def write_manifest(model_dir: Path) -> Path:
    """Write manifest.json with the SHA-256 of every file under model_dir."""
    files = {
        p.relative_to(model_dir).as_posix(): sha256_file(p)
        for p in sorted(model_dir.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    out = model_dir / MANIFEST
    out.write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2) + "\n")
    return out


def verify_manifest(model_dir: Path, required: bool = False) -> bool:
    """Check every file against manifest.json; return False when there is no manifest.

    Raises ModelDirError on a checksum mismatch, a listed file that is missing, or a file
    in the directory that the manifest does not list.
    """
    path = model_dir / MANIFEST
    if not path.is_file():
        if required:
            raise ModelDirError(f"{model_dir}: no {MANIFEST}, and a manifest is required")
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files: dict[str, str] = data["files"] if "files" in data else data
        if data.get("algorithm", "sha256") != "sha256":
            raise ModelDirError(f"{path}: only sha256 manifests are supported")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelDirError(f"{path}: malformed manifest ({exc})") from exc
    problems: list[str] = []
    for rel, expected in sorted(files.items()):
        target = (model_dir / rel).resolve()
        if model_dir.resolve() not in target.parents:
            problems.append(f"{rel}: path outside the model directory")
        elif not target.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(target) != str(expected).lower():
            problems.append(f"{rel}: SHA-256 mismatch")
    listed = set(files)
    for p in sorted(model_dir.rglob("*")):
        rel = p.relative_to(model_dir).as_posix()
        if p.is_file() and p.name != MANIFEST and rel not in listed:
            problems.append(f"{rel}: not listed in the manifest")
    if problems:
        raise ModelDirError(
            f"{model_dir}: manifest check failed, refusing to start: " + "; ".join(problems)
        )
    log.info("manifest verified: %d files", len(files))
    return True


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelDirError(f"{path}: missing")
    return json.loads(path.read_text(encoding="utf-8"))


def safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(read_json(index)["weight_map"].values()))
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ModelDirError(f"{model_dir}: no *.safetensors weights")
    return files


def iter_tensors(model_dir: Path) -> Iterator[tuple[str, Any]]:
    """Yield (name, tensor) from every shard, one tensor at a time (low peak memory)."""
    for shard in safetensors_files(model_dir):
        with safe_open(str(shard), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                yield name, fh.get_tensor(name)


def _token_content(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _raise_exception(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


@dataclass
class TextTokenizer:
    """A tokenizers.Tokenizer plus what tokenizer_config.json adds: chat template, bos/eos."""

    tokenizer: Tokenizer
    chat_template: str | None = None
    bos_token: str | None = None
    eos_token: str | None = None
    eos_token_ids: set[int] = field(default_factory=set)

    @classmethod
    def from_dir(cls, model_dir: Path, extra_eos_ids: list[int] | None = None) -> TextTokenizer:
        tok_file = model_dir / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelDirError(f"{tok_file}: missing (a fast tokenizer file is required)")
        tok = Tokenizer.from_file(str(tok_file))
        cfg_path = model_dir / "tokenizer_config.json"
        cfg = read_json(cfg_path) if cfg_path.is_file() else {}
        template = cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take "default"
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        jinja_file = model_dir / "chat_template.jinja"
        if template is None and jinja_file.is_file():
            template = jinja_file.read_text(encoding="utf-8")
        bos, eos = _token_content(cfg.get("bos_token")), _token_content(cfg.get("eos_token"))
        eos_ids = set(extra_eos_ids or [])
        eos_id = tok.token_to_id(eos) if eos is not None else None
        if eos_id is not None:
            eos_ids.add(eos_id)
        return cls(tok, template, bos, eos, eos_ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        if not self.chat_template:
            raise ValueError("this model has no chat template; use /v1/completions")
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        text = env.from_string(self.chat_template).render(
            messages=messages,
            bos_token=self.bos_token or "",
            eos_token=self.eos_token or "",
            add_generation_prompt=True,
        )
        # The template writes the special tokens (bos) itself, as transformers does.
        return self.encode(text, add_special_tokens=False)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()
