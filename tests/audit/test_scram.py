"""The collection's ``scram_sha256`` filter: the verifier it computes lets the real
PostgreSQL server admit the password (SCRAM over TLS), the same input gives the same
verifier (idempotent role tasks), and nothing else is accepted."""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.clinchat.appliance.plugins.filter.scram import scram_sha256

from tests.services.pki import TestPki, make_pki
from tests.services.postgres import PrivatePostgres


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def postgres(pki: TestPki) -> Iterator[PrivatePostgres]:
    root = Path(tempfile.mkdtemp(prefix="clinchat-scram-"))  # the server runs as postgres
    server = PrivatePostgres(root=root, pki=pki, extensions=())
    server.init()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def sign_in(postgres: PrivatePostgres, pki: TestPki, role: str, password: str) -> str:
    with psycopg.connect(
        host="127.0.0.1", port=postgres.port, dbname="postgres", user=role, password=password,
        sslmode="verify-full", sslrootcert=str(pki.ca_cert), connect_timeout=5,
    ) as conn:  # fmt: skip
        return str(conn.execute("SELECT current_user").fetchone()[0])  # type: ignore[index]


def test_postgresql_admits_the_password_of_the_verifier(
    postgres: PrivatePostgres, pki: TestPki
) -> None:
    password = secrets.token_urlsafe(24) + "!$'\"\\ ~"
    verifier = scram_sha256(password, "scram_probe")
    assert re.fullmatch(
        r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", verifier
    )
    postgres.psql(f"CREATE ROLE scram_probe LOGIN PASSWORD '{verifier}'")
    # stored as given: the server never saw the password
    stored = postgres.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'scram_probe'")
    assert stored == verifier
    assert sign_in(postgres, pki, "scram_probe", password) == "scram_probe"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        sign_in(postgres, pki, "scram_probe", password + "x")


def test_the_same_password_and_role_give_the_same_verifier() -> None:
    assert scram_sha256("synthetic-pass-1", "clinchat_app") == scram_sha256(
        "synthetic-pass-1", "clinchat_app"
    )
    # another role or password: another salt
    salts = {
        scram_sha256(p, r).split("$")[1] for p in ("a-pass-1", "a-pass-2") for r in ("r1", "r2")
    }
    assert len(salts) == 4


@pytest.mark.parametrize("password", ["", "naïve-pass", "tab\tpass"])
def test_a_password_it_cannot_prepare_as_postgresql_does_is_refused(password: str) -> None:
    with pytest.raises(AnsibleFilterError):
        scram_sha256(password, "clinchat_app")
