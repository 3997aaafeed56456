"""The redacting log filter and JSON formatter keep PHI out of log output."""

import io
import json
import logging
from collections.abc import Iterator

import pytest

from app.phi import logging as phi_logging
from app.phi.logging import REDACTION_FAILED, JsonFormatter, PhiRedactingFilter


@pytest.fixture
def capture() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(PhiRedactingFilter())
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger("tests.phi.capture")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, buf
    log.removeHandler(handler)


def lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_message_args_and_extras_are_redacted(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, buf = capture
    log.info(
        "upload from %s, MRN %s",
        "Hope Bell",
        "12345678",
        extra={"patient": "Grant Banks", "count": 3, "tags": ["DOB 03/05/1950"]},
    )
    (rec,) = lines(buf)
    assert rec["msg"] == "upload from [NAME], MRN [MRN]"
    assert rec["patient"] == "[NAME]" and rec["count"] == 3 and rec["tags"] == ["DOB [DATE]"]
    assert rec["level"] == "INFO" and rec["logger"] == "tests.phi.capture" and "ts" in rec
    out = buf.getvalue()
    for secret in ("Hope", "Bell", "12345678", "Grant", "1950"):
        assert secret not in out


def test_exceptions_are_redacted(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, buf = capture
    try:
        raise ValueError("no record for patient Jane Roe, SSN 987-65-4321")
    except ValueError:
        log.exception("lookup failed")
    (rec,) = lines(buf)
    assert "ValueError: no record for patient [NAME], SSN [SSN]" in rec["exc"]
    assert "Roe" not in buf.getvalue() and "4321" not in buf.getvalue()


def test_plain_formatter_after_filter_is_safe() -> None:
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.addFilter(PhiRedactingFilter())
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("tests.phi.plain")
    log.propagate = False
    log.addHandler(handler)
    try:
        raise RuntimeError("call 212-555-0134")
    except RuntimeError:
        log.error("failed for %s", "Maria Gonzalez", exc_info=True)
    log.removeHandler(handler)
    out = buf.getvalue()
    assert "ERROR failed for [NAME]" in out and "RuntimeError: call [PHONE]" in out
    assert "Gonzalez" not in out and "0134" not in out


def test_redaction_failure_withholds_the_message(
    capture: tuple[logging.Logger, io.StringIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(text: str) -> str:
        raise RuntimeError("detector broke")

    monkeypatch.setattr(phi_logging, "redact", boom)
    log, buf = capture
    log.warning("patient %s", "Hope Bell")
    (rec,) = lines(buf)
    assert rec["msg"] == REDACTION_FAILED
    assert "Hope" not in buf.getvalue()


def test_bad_format_args_do_not_raise(capture: tuple[logging.Logger, io.StringIO]) -> None:
    log, buf = capture
    log.info("two args %s %s", "John Smith")
    (rec,) = lines(buf)
    assert "Smith" not in buf.getvalue() and rec["msg"].startswith("two args")
