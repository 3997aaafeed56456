"""POST /api/v1/phi/detect against the real app (sessions in the real Redis).

Every text here is synthetic: invented names, 555 numbers, example.com.
"""

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from app.models import Role
from app.routers.phi import MAX_TEXT_BYTES, TOO_LARGE

URL = "/api/v1/phi/detect"
NAME = "Jane Testperson"
EMAIL = "jane.testperson@example.com"
SENTENCE = f"Seen {NAME} on 03/14/2021; call 555-010-0199 or {EMAIL}."


def detections(phi_type: str) -> float:
    value = REGISTRY.get_sample_value(
        "clinchat_phi_detections_total", {"source": "api", "type": phi_type}
    )
    return value or 0.0


@pytest.mark.parametrize("role", [Role.admin, Role.auditor])
def test_admins_and_auditors_get_the_spans(login: Callable[..., TestClient], role: Role) -> None:
    response = login(role).post(URL, json={"text": SENTENCE})
    assert response.status_code == 200, response.text
    found = response.json()
    assert [(s["type"], SENTENCE[s["start"] : s["end"]]) for s in found["spans"]] == [
        ("NAME", NAME),
        ("DATE", "03/14/2021"),
        ("PHONE", "555-010-0199"),
        ("EMAIL", EMAIL),
    ]
    assert found["redacted"] == "Seen [NAME] on [DATE]; call [PHONE] or [EMAIL]."
    assert found["counts"] == {"NAME": 1, "DATE": 1, "PHONE": 1, "EMAIL": 1}


def test_offsets_count_characters_not_bytes(login: Callable[..., TestClient]) -> None:
    text = f"Überweisung für {NAME}, Zimmer 3."
    spans = login(Role.admin).post(URL, json={"text": text}).json()["spans"]
    assert [text[s["start"] : s["end"]] for s in spans if s["type"] == "NAME"] == [NAME]


def test_counts_add_up_per_type(login: Callable[..., TestClient]) -> None:
    text = "Write to a.testperson@example.com or b.testperson@example.com."
    found = login(Role.auditor).post(URL, json={"text": text}).json()
    assert found["counts"] == {"EMAIL": 2}
    assert found["redacted"] == "Write to [EMAIL] or [EMAIL]."


def test_empty_text_has_no_spans(login: Callable[..., TestClient]) -> None:
    response = login(Role.admin).post(URL, json={"text": ""})
    assert response.status_code == 200
    assert response.json() == {"spans": [], "redacted": "", "counts": {}}


def test_text_without_phi(login: Callable[..., TestClient]) -> None:
    text = "Give broad-spectrum antibiotics within one hour of recognising sepsis."
    assert login(Role.admin).post(URL, json={"text": text}).json() == {
        "spans": [],
        "redacted": text,
        "counts": {},
    }


def test_clinicians_are_refused(login: Callable[..., TestClient]) -> None:
    response = login(Role.clinician).post(URL, json={"text": SENTENCE})
    assert response.status_code == 403
    assert response.json() == {"detail": "your role does not allow this"}


def test_anonymous_is_refused(client: TestClient) -> None:
    response = client.post(URL, json={"text": SENTENCE})
    assert response.status_code == 401
    assert NAME not in response.text


def test_the_limit_is_100_kb(login: Callable[..., TestClient]) -> None:
    admin = login(Role.admin)
    assert admin.post(URL, json={"text": "a" * MAX_TEXT_BYTES}).status_code == 200
    for text in ("a" * (MAX_TEXT_BYTES + 1), "é" * (MAX_TEXT_BYTES // 2 + 1)):
        response = admin.post(URL, json={"text": text})
        assert response.status_code == 413
        assert response.json() == {"detail": TOO_LARGE}


def test_a_huge_body_is_refused_before_it_is_read(login: Callable[..., TestClient]) -> None:
    body = b'{"text": "' + b"a" * (5 * MAX_TEXT_BYTES) + b'"}'
    response = login(Role.admin).post(
        URL, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b'{"text": "Jane Testperson',  # cut short
        b"text=Jane+Testperson",
        b'{"txt": "Jane Testperson"}',
        b'{"text": ["Jane Testperson"]}',
        b'{"text": null}',
        b'{"text": "Jane Testperson \\ud800"}',  # a lone surrogate
    ],
    ids=["truncated", "not-json", "no-text", "a-list", "null", "lone-surrogate"],
)
def test_malformed_bodies_are_422_without_an_echo(
    login: Callable[..., TestClient], body: bytes
) -> None:
    response = login(Role.admin).post(
        URL, content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "Testperson" not in response.text


def test_detections_are_counted_by_type(login: Callable[..., TestClient]) -> None:
    before = {t: detections(t) for t in ("NAME", "EMAIL", "PHONE")}
    login(Role.admin).post(URL, json={"text": SENTENCE})
    assert detections("NAME") == before["NAME"] + 1
    assert detections("EMAIL") == before["EMAIL"] + 1
    assert detections("PHONE") == before["PHONE"] + 1


def test_the_text_reaches_no_log(
    login: Callable[..., TestClient],
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    admin = login(Role.admin)
    with caplog.at_level("DEBUG"):
        assert admin.post(URL, json={"text": SENTENCE}).status_code == 200
        admin.post(URL, json={"text": SENTENCE + "a" * MAX_TEXT_BYTES})  # 413
        admin.post(URL, json={"text": [SENTENCE]})  # 422
        admin.post(URL, content=SENTENCE.encode(), headers={"Content-Type": "application/json"})
    out, err = capfd.readouterr()
    for secret in (NAME, "Testperson", EMAIL, "555-010-0199"):
        assert secret not in caplog.text
        assert secret not in out
        assert secret not in err
