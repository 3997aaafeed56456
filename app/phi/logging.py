"""Keep PHI out of log records: a redacting ``logging.Filter`` and a JSON formatter.

Install both app-wide (the lead wires this in ``app.main``)::

    handler = logging.StreamHandler()
    handler.addFilter(PhiRedactingFilter())
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(handlers=[handler], level=logging.INFO)

The filter rewrites each record in place: the formatted message, the exception and
stack text and every string in ``extra`` are redacted with :func:`app.phi.redact`, and
``args`` are dropped (they were merged into the message first). If redaction itself
fails, the record keeps no text at all: it fails closed, never open. The formatter
redacts again (idempotently) so that a handler without the filter is still safe.
"""

import json
import logging
import traceback
from datetime import UTC, datetime
from typing import Any

from app.phi.detector import redact

REDACTION_FAILED = "[log message withheld: PHI redaction failed]"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
    | {"message", "asctime", "taskName", "phi_redacted"}
)


def _safe(text: str) -> str:
    try:
        return redact(text)
    except Exception:  # noqa: BLE001 - a failure must withhold the text, not raise it
        return REDACTION_FAILED


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return _safe(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(v) for v in value]
    return _safe(str(value))


class PhiRedactingFilter(logging.Filter):
    """Redacts PHI from the message, args, exception/stack text and extras of a record.

    Never drops a record and never raises.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "phi_redacted", False):
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - bad format args: keep only the template
            message = str(record.msg)
        record.msg = _safe(message)
        record.args = None
        if record.exc_info and record.exc_info[0] is not None:
            try:
                text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            except Exception:  # noqa: BLE001
                text = REDACTION_FAILED
            record.exc_text = _safe(text)
            # keep the type for handlers that look at it; drop the live exception whose
            # str() could still carry PHI into a handler that formats it again
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = _safe(record.exc_text)
        if record.stack_info:
            record.stack_info = _safe(record.stack_info)
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, _redact_value(value))
        record.phi_redacted = True
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, exc, stack and extras, all redacted."""

    def __init__(self) -> None:
        super().__init__()
        self._filter = PhiRedactingFilter()

    def format(self, record: logging.LogRecord) -> str:
        self._filter.filter(record)
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        return json.dumps(out, ensure_ascii=False, default=str)
