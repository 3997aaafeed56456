"""PHI planted in what clinicians send appears in no log line, on any path.

Obviously synthetic identifiers go into chat questions, a conversation title, a
facade request, malformed bodies and a sign-in name, through answers that work and
answers that fail (serving down, Vault down, bad input). Two captures:

- every line the app's own JSON handler writes (what the host's journal would get),
  read from the process's stderr;
- every log record at DEBUG, raw, before any redaction (a handler added beside the
  app's): the app must not log user text at all; the redacting filter is the second
  line of defence, not the first.

Both captures must have seen the requests (their log lines are there), so the test
cannot pass by capturing nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from app.models import Role
from app.settings import Settings
from tests.app.data.kbdb import isolated_settings
from tests.app.test_chat import API, COVERED, ask, corpus, new_conversation, use  # noqa: F401
from tests.services.postgres import PrivatePostgres, free_port

NAME = "Zelda Quixotic-Testperson"
MRN = "MRN 99-TEST-4411"
PHONE = "(555) 010-4477"
PLANTED = (NAME, "Quixotic", "99-TEST-4411", "010-4477")
QUESTION = f"Patient {NAME}, {MRN}, phone {PHONE}: {COVERED}"


@pytest.fixture(scope="module")
def phi_settings(base_settings: Settings, postgres: PrivatePostgres) -> Settings:
    return isolated_settings(base_settings, postgres, max_answer_tokens=8)


@pytest.fixture
def settings(phi_settings: Settings) -> Settings:
    return phi_settings


class RawRecords(logging.Handler):
    """Every record's full text (message, exception, extras) before any filter runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # handlers run in order: this one sits before the app's redacting handler
        parts = [str(record.msg), repr(record.args)]
        if record.exc_info and record.exc_info[1] is not None:
            parts.append(repr(record.exc_info[1]))
        parts.extend(f"{k}={v!r}" for k, v in vars(record).items() if k not in _STANDARD)
        self.texts.append(" ".join(parts))


_STANDARD = set(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {"message"}


@pytest.fixture
def raw_logs() -> Iterator[RawRecords]:
    handler = RawRecords()
    root = logging.getLogger()
    level = root.level
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def capture_from_here(raw: RawRecords) -> None:
    """After the app configured logging (its lifespan ran): add the raw handler first."""
    root = logging.getLogger()
    root.handlers.insert(0, raw)
    root.setLevel(logging.DEBUG)


def test_planted_phi_is_in_no_log_line(
    settings: Settings,
    login: Callable[..., TestClient],
    client: TestClient,
    corpus: dict[str, str],  # noqa: F811
    raw_logs: RawRecords,
    capfd: pytest.CaptureFixture[str],
) -> None:
    clinician = login(Role.clinician)
    capture_from_here(raw_logs)
    capfd.readouterr()  # only what follows

    # a cited answer, in a conversation whose title holds PHI
    conversation = new_conversation(clinician, title=f"{NAME} follow-up")
    answered = ask(clinician, conversation, QUESTION)
    assert answered.status_code == 200 and "event: done" in answered.text
    assert clinician.get(f"{API}/{conversation}").status_code == 200

    # the facade, the same question
    facade = clinician.post(
        "/v1/chat/completions", json={"messages": [{"role": "user", "content": QUESTION}]}
    )
    assert facade.status_code == 200

    # bad input: too long, wrong types, broken JSON
    assert ask(clinician, conversation, QUESTION + "x" * 20_000).status_code == 422
    assert clinician.post(API, json={"title": [NAME]}).status_code == 422
    broken = clinician.post(
        f"{API}/{conversation}/messages",
        content=f'{{"content": "{QUESTION}',
        headers={"Content-Type": "application/json"},
    )
    assert broken.status_code == 422

    # dependencies down while the PHI is in flight
    use(settings.model_copy(update={"serving_url": f"http://127.0.0.1:{free_port()}/v1"}))
    assert ask(clinician, conversation, QUESTION).status_code == 503
    use(settings.model_copy(update={"vault_addr": f"https://127.0.0.1:{free_port()}"}))
    assert clinician.post(API, json={"title": f"{NAME} again"}).status_code == 503
    use(settings)

    # a sign-in attempt whose user name is a patient's name (a classic mistake)
    failed = client.post("/api/v1/auth/login", json={"username": NAME, "password": PHONE})
    assert failed.status_code == 401

    written = capfd.readouterr()
    lines = (written.out + written.err).splitlines()
    assert any('"logger": "app.' in line for line in lines), "the app's JSON lines were not seen"
    assert len(raw_logs.texts) > 5, "the raw records were not seen"
    for planted in PLANTED:
        leaking = [line for line in lines if planted in line]
        assert leaking == [], f"{planted!r} in the app's log output: {leaking[:3]}"
        raw = [text for text in raw_logs.texts if planted in text]
        assert raw == [], f"{planted!r} in a log record before redaction: {raw[:3]}"
