"""The second factor of local accounts (app/auth/totp.py): RFC 6238 itself, then
enrolment with ``clinchat-admin totp``, sign-in, lockout, replay and reset against
the real PostgreSQL, Redis, OpenBao and OpenLDAP of tests/app/conftest.py."""

from __future__ import annotations

import base64
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient

from app import admin
from app.auth import service, totp
from app.auth.lockout import Lockout
from app.crypto import DecryptionError, cipher_for
from app.db import conninfo
from app.settings import Settings
from app.web.pages_auth import LOGIN_COOKIE
from tests.app.conftest import enrol_totp
from tests.app.test_auth import (
    PASSWORD,
    app_client,
    audit_rows,
    last_audit_id,
    sign_ins_at_once,
    sync_redis,
)
from tests.services.postgres import free_port

RFC_SECRET = b"12345678901234567890"  # RFC 6238 appendix B, SHA-1


# -- the algorithm ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("unix_time", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc6238_test_vectors(unix_time: int, eight_digits: str) -> None:
    assert totp.totp(RFC_SECRET, unix_time, digits=8) == eight_digits
    # 6 digits: the same truncation, modulo 10**6
    assert totp.totp(RFC_SECRET, unix_time) == eight_digits[-6:]


def test_one_step_of_clock_skew_either_side_and_no_more() -> None:
    assert totp.totp(RFC_SECRET, 59) == "287082"
    step = totp.step_at(59)
    assert totp.matching_step(RFC_SECRET, "287082", 59) == step
    assert totp.matching_step(RFC_SECRET, "287082", 59 + 30) == step  # the clock is ahead
    assert totp.matching_step(RFC_SECRET, "287082", 59 - 30) == step  # or behind
    assert totp.matching_step(RFC_SECRET, "287082", 59 + 60) is None
    assert totp.matching_step(RFC_SECRET, "287082", 59 - 60) is None
    for bad in ("28708", "2870820", "28708a", "２８７０８２", ""):
        assert totp.matching_step(RFC_SECRET, bad, 59) is None


def test_the_otpauth_uri() -> None:
    uri = totp.otpauth_uri("bg admin", RFC_SECRET)
    assert uri == (
        "otpauth://totp/ClinChat:bg%20admin?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        "&issuer=ClinChat&algorithm=SHA1&digits=6&period=30"
    )


# -- helpers ------------------------------------------------------------------------------------


def cli(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``clinchat-admin ARGV`` in this process, with these settings; its stdout."""
    args = admin.parser().parse_args(list(argv))
    assert args.run(settings, args) == admin.OK
    return capsys.readouterr().out


def printed_secret(out: str) -> bytes:
    [line] = [line for line in out.splitlines() if line.startswith("secret: ")]
    encoded = line.removeprefix("secret: ")
    return base64.b32decode(encoded + "=" * (-len(encoded) % 8))


def wrong_code(secret: bytes) -> str:
    """A code that is none of the three a sign-in now accepts."""
    now = time.time()
    valid = {totp.totp(secret, now + d) for d in (-60, -30, 0, 30, 60)}
    return next(c for c in (f"{i:06d}" for i in range(1000, 10**6, 7919)) if c not in valid)


def login(client: TestClient, name: str, code: str | None = None) -> Any:
    body = {"username": name, "password": PASSWORD}
    if code is not None:
        body["totp"] = code
    return client.post("/api/v1/auth/login", json=body)


def failures(settings: Settings, name: str) -> int:
    """The lockout's count of failed attempts for the name."""
    key = Lockout(None, settings)._keys("user", name)[0]  # type: ignore[arg-type]
    return int(sync_redis(settings).get(key) or 0)


def stored(settings: Settings, name: str) -> tuple[bytes | None, int | None]:
    with psycopg.connect(conninfo(settings)) as conn:
        row = conn.execute(
            "SELECT totp_secret_enc, totp_last_step FROM users WHERE username = %s", (name,)
        ).fetchone()
    assert row is not None
    return (bytes(row[0]) if row[0] is not None else None), row[1]


def reasons(settings: Settings, since: int) -> list[str]:
    return [
        e["detail"].get("reason", e["outcome"]) for e in audit_rows(settings, "auth.login", since)
    ]


def local_name() -> str:
    return f"bg-{uuid.uuid4().hex[:8]}"


# -- enrol, sign in, replay, reset ------------------------------------------------------------


def test_enrol_sign_in_replay_and_reset(
    settings: Settings,
    users: Callable[..., uuid.UUID],
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    name = local_name()
    user_id = users(name, ["admin"], password=PASSWORD, totp=False)
    since = last_audit_id(settings)
    with app_client(settings) as client:
        # not enrolled: refused, and told how to enrol (not a 500)
        unenrolled = login(client, name, "123456")
        assert unenrolled.status_code == 401
        detail = unenrolled.json()["detail"]
        assert "not enrolled" in detail and "clinchat-admin totp enrol" in detail
        assert name not in detail

        out = cli(settings, capsys, "totp", "enrol", name)
        secret = printed_secret(out)
        assert len(secret) == 20
        assert f"uri: otpauth://totp/ClinChat:{name}?secret={totp.base32(secret)}" in out
        assert "&issuer=ClinChat" in out
        # enrolling again would silently replace it: refused, pointing at reset
        with pytest.raises(admin.Failed) as again:
            cli(settings, capsys, "totp", "enrol", name)
        assert again.value.code == admin.BAD_INPUT and "totp reset" in again.value.message

        # the column holds the envelope-encrypted secret, bound to this user
        blob, last_step = stored(settings, name)
        assert blob is not None and last_step is None
        assert blob.startswith(b"CE2") and secret not in blob
        assert totp.base32(secret).encode() not in blob
        assert cipher_for(settings).decrypt(blob, totp.aad(user_id)) == secret
        with pytest.raises(DecryptionError):
            cipher_for(settings).decrypt(blob, totp.aad(uuid.uuid4()))

        # the password alone: "second factor required", and the attempt does not count
        missing = login(client, name)
        assert missing.status_code == 401
        assert missing.json()["detail"] == service.SECOND_FACTOR_REQUIRED
        assert failures(settings, name) == 0
        # a wrong code counts like a wrong password
        wrong = login(client, name, wrong_code(secret))
        assert wrong.status_code == 401 and wrong.json()["detail"] == service.WRONG_CODE
        assert failures(settings, name) == 1
        # the right code: signed in, the count reset
        code = totp.totp(secret, time.time())
        signed = login(client, name, code)
        assert signed.status_code == 200, signed.text
        assert signed.json()["roles"] == ["admin"] and failures(settings, name) == 0
        accepted_step = stored(settings, name)[1]
        assert accepted_step is not None and abs(accepted_step - totp.step_at(time.time())) <= 1
        # replay: the same code again, and the code of the step before, are refused
        replayed = login(client, name, code)
        assert replayed.status_code == 401 and replayed.json()["detail"] == service.WRONG_CODE
        earlier = login(client, name, totp.totp(secret, time.time() - totp.STEP_S))
        assert earlier.status_code == 401
        assert failures(settings, name) == 2

        # reset: the factor is gone, the account is refused as not enrolled
        out = cli(settings, capsys, "totp", "reset", name)
        assert out == f"ok: second factor of {name} removed; it signs in again once enrolled\n"
        assert stored(settings, name) == (None, None)
        after = login(client, name, totp.totp(secret, time.time()))
        assert after.status_code == 401 and "not enrolled" in after.json()["detail"]

    assert reasons(settings, since) == [
        "totp_not_enrolled",
        "totp_required",
        "bad_totp",
        "success",
        "totp_replayed",
        "totp_replayed",
        "totp_not_enrolled",
    ]
    [enrolled] = audit_rows(settings, "user.totp_enrol", since)
    [removed] = audit_rows(settings, "user.totp_reset", since)
    assert enrolled["actor"] == removed["actor"] == "clinchat-admin"
    assert enrolled["entity_id"] == removed["entity_id"] == str(user_id)
    assert removed["detail"] == {"factor": "totp", "was_enrolled": True}
    # neither the secret nor a code in the trail or in a log line
    trail = json.dumps(audit_rows(settings, "auth.login", since), default=str)
    assert code not in trail and totp.base32(secret) not in trail
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert code not in logged and totp.base32(secret) not in logged


def test_wrong_codes_lock_the_account_and_leaving_the_code_out_does_not_reset_it(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    short = settings.model_copy(update={"lockout_duration_s": 60})
    name = local_name()
    user_id = users(name, ["clinician"], password=PASSWORD, totp=False)
    secret = enrol_totp(settings, user_id, name)
    since = last_audit_id(settings)
    with app_client(short) as client:
        assert [login(client, name, wrong_code(secret)).status_code for _ in range(4)] == [401] * 4
        # the right password without a code neither counts nor clears the four failures
        assert [login(client, name).status_code for _ in range(3)] == [401] * 3
        assert failures(settings, name) == 4
        assert login(client, name, wrong_code(secret)).status_code == 401  # the fifth: locks
        locked = login(client, name, totp.totp(secret, time.time()))
        assert locked.status_code == 429 and "locked" in locked.json()["detail"]
    [lock_event] = audit_rows(settings, "auth.lockout", since)
    assert lock_event["actor"] == name and lock_event["detail"] == {"scope": "user"}
    assert stored(settings, name)[1] is None  # the right code was never checked


def test_one_code_signs_in_once_even_sent_twice_at_once(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_name()
    secret = enrol_totp(settings, users(name, ["admin"], password=PASSWORD, totp=False), name)
    body = {"username": name, "password": PASSWORD, "totp": totp.totp(secret, time.time())}
    assert sign_ins_at_once(settings, [body] * 4, "10.251.2.2") == [200, 401, 401, 401]


# -- who is affected ----------------------------------------------------------------------------


def test_a_directory_user_signs_in_without_a_code(settings: Settings, ldap_server: Any) -> None:
    with app_client(settings) as client:
        for body in (
            {"username": "clin1", "password": ldap_server.users["clin1"]},
            {"username": "clin1", "password": ldap_server.users["clin1"], "totp": "123456"},
        ):
            response = client.post("/api/v1/auth/login", json=body)
            assert response.status_code == 200, response.text
            assert response.json()["roles"] == ["clinician"]
        # the field has 6 digits when it is there
        bad = client.post(
            "/api/v1/auth/login",
            json={"username": "clin1", "password": ldap_server.users["clin1"], "totp": "12345"},
        )
        assert bad.status_code == 422


def test_with_totp_required_off_only_an_enrolled_account_needs_its_code(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    off = settings.model_copy(update={"totp_required": False})
    plain, enrolled = local_name(), local_name()
    users(plain, ["admin"], password=PASSWORD, totp=False)
    secret = enrol_totp(
        settings, users(enrolled, ["admin"], password=PASSWORD, totp=False), enrolled
    )
    with app_client(off) as client:
        assert login(client, plain).status_code == 200
        assert login(client, enrolled).status_code == 401
        assert login(client, enrolled, totp.totp(secret, time.time())).status_code == 200


def test_the_cli_refuses_directory_and_unknown_users(
    settings: Settings, users: Callable[..., uuid.UUID], capsys: pytest.CaptureFixture[str]
) -> None:
    directory = f"dir-{uuid.uuid4().hex[:8]}"
    users(directory, ["clinician"])
    for name, message in ((directory, "directory account"), (local_name(), "no local user")):
        with pytest.raises(admin.Failed) as refused:
            cli(settings, capsys, "totp", "enrol", name)
        assert refused.value.code == admin.BAD_INPUT and message in refused.value.message
    unenrolled = local_name()
    users(unenrolled, ["admin"], password=PASSWORD, totp=False)
    assert cli(settings, capsys, "totp", "reset", unenrolled) == (
        f"ok: {unenrolled} had no second factor\n"
    )


# -- failures are 401 or 503, never 500 -------------------------------------------------------


def test_a_secret_moved_to_another_user_is_refused_not_a_500(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    owner, other = local_name(), local_name()
    secret = enrol_totp(settings, users(owner, ["admin"], password=PASSWORD, totp=False), owner)
    users(other, ["admin"], password=PASSWORD, totp=False)
    with psycopg.connect(conninfo(settings)) as conn:
        conn.execute(
            "UPDATE users SET totp_secret_enc = (SELECT totp_secret_enc FROM users"
            " WHERE username = %s) WHERE username = %s",
            (owner, other),
        )
    with app_client(settings) as client:
        response = login(client, other, totp.totp(secret, time.time()))
    assert response.status_code == 401
    assert "cannot be read" in response.json()["detail"]


def test_vault_down_is_503_naming_it(settings: Settings, users: Callable[..., uuid.UUID]) -> None:
    name = local_name()
    secret = enrol_totp(settings, users(name, ["admin"], password=PASSWORD, totp=False), name)
    down = settings.model_copy(update={"vault_addr": f"https://127.0.0.1:{free_port()}"})
    with app_client(down) as client:
        response = login(client, name, totp.totp(secret, time.time()))
    assert response.status_code == 503 and response.json()["down"] == ["vault"]
    assert failures(settings, name) == 0  # the code could not be checked: not counted


# -- the sign-in page -----------------------------------------------------------------------------


def test_the_sign_in_page_takes_the_code(
    settings: Settings, users: Callable[..., uuid.UUID]
) -> None:
    name = local_name()
    secret = enrol_totp(settings, users(name, ["admin"], password=PASSWORD, totp=False), name)
    with app_client(settings) as client:
        page = client.get("/login")
        assert 'id="totp"' in page.text and 'autocomplete="one-time-code"' in page.text
        form = {"username": name, "password": PASSWORD, "login_csrf": client.cookies[LOGIN_COOKIE]}
        missing = client.post("/login", data=form)
        assert missing.status_code == 401 and "second factor required" in missing.text
        malformed = client.post("/login", data={**form, "totp": "12ab56"})
        assert malformed.status_code == 400 and "6 digits" in malformed.text
        code = totp.totp(secret, time.time())
        spaced = f"{code[:3]} {code[3:]}"  # as authenticator apps show it
        signed = client.post("/login", data={**form, "totp": spaced}, follow_redirects=False)
        assert signed.status_code == 303, signed.text
        assert client.get("/api/v1/auth/me").json()["username"] == name
