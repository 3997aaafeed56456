"""Every setting of the model server, in one place.

Each field is read from the environment as ``CLINCHAT_SERVE_<FIELD>`` (upper case), from
files in ``$CREDENTIALS_DIRECTORY`` (systemd ``LoadCredential=``) for secrets, and from the
command line, which wins. serving/README.md documents every field; keep the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Quantization = Literal["none", "nf4", "int8"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLINCHAT_SERVE_",
        secrets_dir=os.environ.get("CREDENTIALS_DIRECTORY") or None,
        protected_namespaces=(),
        extra="ignore",
    )

    model_dir: Path = Field(description="Hugging Face-format Llama model directory (local disk).")
    model_name: str | None = Field(
        default=None, description="Model id served in the API; default: the directory name."
    )
    quantization: Quantization = Field(
        default="none", description="Weight quantization with bitsandbytes: nf4, int8 or none."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="cuda when available with auto."
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        default="auto", description="Compute dtype; auto is bfloat16 on a GPU, float32 on CPU."
    )
    host: str = Field(default="127.0.0.1", description="Address to listen on.")
    port: int = Field(default=8081, ge=0, le=65535, description="TCP port to listen on.")
    max_model_len: int | None = Field(
        default=None,
        ge=16,
        description="Context length (prompt + output); default min(model's, 4096).",
    )
    max_num_seqs: int = Field(
        default=32, ge=1, le=256, description="KV-cache slots = requests decoded at once."
    )
    max_queue: int = Field(
        default=256, ge=0, description="Requests allowed to wait for a slot; more get 429."
    )
    prefill_chunk: int = Field(
        default=512, ge=16, description="Most prompt tokens run in one prefill forward."
    )
    cuda_graphs: bool = Field(default=True, description="Capture the decode step as CUDA graphs.")
    embedding_model_dir: Path | None = Field(
        default=None, description="BERT-style sentence-embedding model directory (optional)."
    )
    embedding_model_name: str | None = Field(
        default=None, description="Model id of the embedding model; default: directory name."
    )
    api_key: SecretStr | None = Field(
        default=None, description="Bearer token required on /v1/* (never logged)."
    )
    api_key_file: Path | None = Field(
        default=None, description="File holding the bearer token (first line)."
    )
    vault_addr: str = Field(
        default="",
        description="Vault/OpenBao URL: take the bearer token from its KV store at start "
        "(serving/vault.py) when no api_key is given.",
    )
    vault_ca_cert: Path | None = Field(default=None, description="CA file that verifies Vault.")
    vault_role_id_file: Path | None = Field(default=None, description="AppRole role id file.")
    vault_wrapped_secret_id_file: Path | None = Field(
        default=None, description="Response-wrapped AppRole secret id (single use) file."
    )
    vault_secret_id_file: Path | None = Field(
        default=None, description="Where the unwrapped secret id is kept (0600)."
    )
    vault_kv_mount: str = Field(default="clinchat", description="KV v2 mount of the token.")
    vault_kv_path: str = Field(default="serving", description="KV path; the key is api_key.")
    tls_cert_file: Path | None = Field(
        default=None, description="PEM certificate (chain): serve HTTPS only, TLS 1.2 or later."
    )
    tls_key_file: Path | None = Field(default=None, description="PEM private key of tls_cert_file.")
    require_manifest: bool = Field(
        default=False, description="Refuse to start when the model dir has no manifest.json."
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level."
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> Settings:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together: set both or neither")
        return self

    @model_validator(mode="after")
    def _vault_files(self) -> Settings:
        if self.vault_addr and (
            self.vault_role_id_file is None or self.vault_secret_id_file is None
        ):
            raise ValueError("vault_addr needs vault_role_id_file and vault_secret_id_file")
        return self

    @model_validator(mode="after")
    def _read_key_file(self) -> Settings:
        if self.api_key is None and self.api_key_file is not None:
            token = self.api_key_file.read_text(encoding="utf-8").strip().splitlines()
            if not token or not token[0].strip():
                raise ValueError(f"api_key_file {self.api_key_file} is empty")
            self.api_key = SecretStr(token[0].strip())
        return self

    @property
    def served_model_name(self) -> str:
        return self.model_name or self.model_dir.resolve().name

    @property
    def served_embedding_name(self) -> str | None:
        if self.embedding_model_dir is None:
            return None
        return self.embedding_model_name or self.embedding_model_dir.resolve().name
