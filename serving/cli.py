"""`clinchat-serve`: serve a model; `make-test-model`, `manifest` and `bench` subcommands.

Every serve option has an environment variable CLINCHAT_SERVE_<OPTION> (see settings.py);
a command-line value wins over the environment. The API key is never a command-line
option (it would show in `ps`): use CLINCHAT_SERVE_API_KEY, a credential file named
clinchat_serve_api_key in $CREDENTIALS_DIRECTORY (pydantic-settings reads secrets by
their environment name), or --api-key-file (what roles/serving passes).
"""

from __future__ import annotations

import argparse
import functools
import logging
import ssl
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from serving.settings import Settings

SUBCOMMANDS = ("make-test-model", "manifest", "bench")

# Mozilla's "intermediate" TLS 1.2 suites (forward secret, AEAD only); TLS 1.3 suites are
# OpenSSL's own, all of them acceptable.
TLS_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="clinchat-serve",
        description="OpenAI-compatible LLM server. Subcommands: "
        + ", ".join(SUBCOMMANDS)
        + " (see `clinchat-serve SUBCOMMAND --help`).",
    )
    a = p.add_argument
    a("--model-dir", type=Path, help="model directory [CLINCHAT_SERVE_MODEL_DIR]")
    a("--model-name", help="served model id [CLINCHAT_SERVE_MODEL_NAME]")
    a(
        "--quantization",
        choices=["none", "nf4", "int8"],
        help="weight quantization [CLINCHAT_SERVE_QUANTIZATION]",
    )
    a("--device", choices=["auto", "cpu", "cuda"], help="[CLINCHAT_SERVE_DEVICE]")
    a("--dtype", choices=["auto", "bfloat16", "float16", "float32"], help="[CLINCHAT_SERVE_DTYPE]")
    a("--host", help="listen address [CLINCHAT_SERVE_HOST]")
    a("--port", type=int, help="listen port [CLINCHAT_SERVE_PORT]")
    a("--max-model-len", type=int, help="context length [CLINCHAT_SERVE_MAX_MODEL_LEN]")
    a("--max-num-seqs", type=int, help="KV slots [CLINCHAT_SERVE_MAX_NUM_SEQS]")
    a("--max-queue", type=int, help="waiting requests before 429 [CLINCHAT_SERVE_MAX_QUEUE]")
    a("--prefill-chunk", type=int, help="[CLINCHAT_SERVE_PREFILL_CHUNK]")
    a(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="[CLINCHAT_SERVE_CUDA_GRAPHS]",
    )
    a("--embedding-model-dir", type=Path, help="[CLINCHAT_SERVE_EMBEDDING_MODEL_DIR]")
    a("--embedding-model-name", help="[CLINCHAT_SERVE_EMBEDDING_MODEL_NAME]")
    a("--api-key-file", type=Path, help="bearer token file [CLINCHAT_SERVE_API_KEY_FILE]")
    a("--vault-addr", help="read the token from Vault at start [CLINCHAT_SERVE_VAULT_ADDR]")
    a("--vault-ca-cert", type=Path, help="[CLINCHAT_SERVE_VAULT_CA_CERT]")
    a("--vault-role-id-file", type=Path, help="[CLINCHAT_SERVE_VAULT_ROLE_ID_FILE]")
    a(
        "--vault-wrapped-secret-id-file",
        type=Path,
        help="[CLINCHAT_SERVE_VAULT_WRAPPED_SECRET_ID_FILE]",
    )
    a("--vault-secret-id-file", type=Path, help="[CLINCHAT_SERVE_VAULT_SECRET_ID_FILE]")
    a("--vault-kv-mount", help="[CLINCHAT_SERVE_VAULT_KV_MOUNT]")
    a("--vault-kv-path", help="[CLINCHAT_SERVE_VAULT_KV_PATH]")
    a("--tls-cert-file", type=Path, help="PEM certificate [CLINCHAT_SERVE_TLS_CERT_FILE]")
    a("--tls-key-file", type=Path, help="PEM private key [CLINCHAT_SERVE_TLS_KEY_FILE]")
    a(
        "--require-manifest",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="[CLINCHAT_SERVE_REQUIRE_MANIFEST]",
    )
    a(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="[CLINCHAT_SERVE_LOG_LEVEL]",
    )
    return p


def settings_from_args(ns: argparse.Namespace) -> Settings:
    given: dict[str, Any] = {k: v for k, v in vars(ns).items() if v is not None}
    return Settings(**given)


def serve(argv: list[str]) -> int:
    ns = serve_parser().parse_args(argv)
    try:
        settings = settings_from_args(ns)
    except ValidationError as exc:
        missing = [".".join(map(str, e["loc"])) for e in exc.errors()]
        print(f"clinchat-serve: invalid settings: {', '.join(missing)}\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.api_key is None and settings.vault_addr:
        from serving.vault import VaultRefused, VaultUnavailable

        try:
            settings = settings.model_copy(update={"api_key": _api_key_from_vault(settings)})
        except VaultUnavailable as exc:  # 3: systemd restarts the unit and tries again
            print(f"clinchat-serve: {exc}", file=sys.stderr)
            return 3
        except VaultRefused as exc:  # 2: the deployment must fix it (RestartPreventExitStatus)
            print(f"clinchat-serve: {exc}", file=sys.stderr)
            return 2
    import uvicorn

    from serving import loader
    from serving.api import create_app, default_loader

    try:  # before binding the port: a bad model directory never starts a server
        for d in filter(None, (settings.model_dir, settings.embedding_model_dir)):
            if not (d / "config.json").is_file():
                raise loader.ModelDirError(f"{d}: not a model directory (no config.json)")
        loader.verify_manifest(settings.model_dir, required=settings.require_manifest)
    except loader.ModelDirError as exc:
        print(f"clinchat-serve: {exc}", file=sys.stderr)
        return 1

    failed: list[str] = []
    server: uvicorn.Server | None = None

    def on_load_error(message: str) -> None:
        failed.append(message)
        if server is not None:
            server.should_exit = True

    app = create_app(
        settings, functools.partial(_load_verified, default_loader), on_load_error=on_load_error
    )
    server = uvicorn.Server(server_config(settings, app))
    server.run()
    if failed:
        print(f"clinchat-serve: loading the model failed: {failed[0]}", file=sys.stderr)
        return 1
    return 0


def _api_key_from_vault(settings: Settings) -> SecretStr:
    from serving.vault import VaultSource

    assert settings.vault_role_id_file is not None and settings.vault_secret_id_file is not None
    source = VaultSource(
        addr=settings.vault_addr,
        ca_cert=settings.vault_ca_cert,
        role_id_file=settings.vault_role_id_file,
        wrapped_secret_id_file=settings.vault_wrapped_secret_id_file,
        secret_id_file=settings.vault_secret_id_file,
        kv_mount=settings.vault_kv_mount,
        kv_path=settings.vault_kv_path,
    )
    return SecretStr(source.api_key())


def server_config(settings: Settings, app: Any) -> Any:
    """uvicorn's config: plain HTTP, or with a certificate HTTPS only (TLS 1.2 minimum)."""
    import uvicorn

    tls: dict[str, Any] = {}
    if settings.tls_cert_file is not None:
        tls = {
            "ssl_certfile": str(settings.tls_cert_file),
            "ssl_keyfile": str(settings.tls_key_file),
            "ssl_ciphers": TLS_CIPHERS,
            "ssl_context_factory": _tls_floor,
        }
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=10,
        **tls,
    )


def _tls_floor(config: Any, default_factory: Any) -> ssl.SSLContext:
    # uvicorn has no option for the lowest protocol version; set it on its own context.
    context: ssl.SSLContext = default_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_verified(default_loader: Any, settings: Settings, metrics: Any) -> Any:
    # The manifest was checked before the port was bound; don't hash the weights twice.
    return default_loader(
        settings.model_copy(update={"require_manifest": False}), metrics, verify=False
    )


def make_test_model(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="clinchat-serve make-test-model",
        description="Write a random Llama model (no download).",
    )
    p.add_argument("dir", type=Path)
    p.add_argument("--preset", choices=["tiny", "llama-3.1-8b"], default="tiny")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--manifest", action="store_true", help="also write manifest.json")
    ns = p.parse_args(argv)
    from serving.loader import write_manifest
    from serving.testmodel import write_model

    write_model(ns.dir, ns.preset, ns.seed)
    if ns.manifest:
        write_manifest(ns.dir)
    print(f"wrote {ns.preset} model to {ns.dir}")
    return 0


def manifest(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="clinchat-serve manifest", description="Write or check manifest.json (SHA-256)."
    )
    p.add_argument("dir", type=Path)
    p.add_argument("--check", action="store_true", help="verify instead of writing")
    ns = p.parse_args(argv)
    from serving.loader import ModelDirError, verify_manifest, write_manifest

    if not ns.check:
        print(f"wrote {write_manifest(ns.dir)}")
        return 0
    try:
        verify_manifest(ns.dir, required=True)
    except ModelDirError as exc:
        print(f"clinchat-serve: {exc}", file=sys.stderr)
        return 1
    print("manifest OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "make-test-model":
        return make_test_model(args[1:])
    if args and args[0] == "manifest":
        return manifest(args[1:])
    if args and args[0] == "bench":
        from serving.bench import main as bench_main

        return bench_main(args[1:])
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
