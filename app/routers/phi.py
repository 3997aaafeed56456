"""POST /api/v1/phi/detect: where the PHI detector finds identifiers in a text.

For admins (checking a document's text before it goes into the library) and
auditors (checking what the detector catches). The text is neither stored nor
logged; only the number of spans by type reaches /metrics
(``clinchat_phi_detections_total{source="api"}``).
"""

from collections import Counter
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, HTTPException, status
from pydantic import BaseModel, Field, field_validator

from app.auth.deps import AdminOrAuditor, require_scope
from app.auth.ratelimit import DetectLimit
from app.auth.tokens import Scope
from app.metrics import PHI_DETECTIONS
from app.phi import PhiType, Span, detect

router = APIRouter(
    prefix="/api/v1/phi", tags=["phi"], dependencies=[Depends(require_scope(Scope.detect))]
)

MAX_TEXT_BYTES = 100_000
# The body may be longer than its text: JSON escapes a 2-4 byte character as 6-12
# bytes (\uXXXX). A body past this is refused (413) before it is read in full.
MAX_BODY_BYTES = 4 * MAX_TEXT_BYTES
TOO_LARGE = f"text is larger than {MAX_TEXT_BYTES // 1000} kB: send it in parts"

# Obviously synthetic: an invented name, a 555 number, example.com.
EXAMPLE_TEXT = "Seen Jane Testperson on 03/14/2021; call 555-010-0199 or jane@example.com."


class DetectRequest(BaseModel):
    text: Annotated[str, Field(description=f"at most {MAX_TEXT_BYTES} bytes as UTF-8")]

    model_config = {"json_schema_extra": {"examples": [{"text": EXAMPLE_TEXT}]}}

    @field_validator("text")
    @classmethod
    def _unicode(cls, text: str) -> str:
        # JSON can carry lone surrogates ("\ud800"); they cannot be encoded or answered.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text is not valid Unicode (a lone surrogate)") from None
        return text


class PhiSpan(BaseModel):
    start: int = Field(description="offset of the first character, in Unicode code points")
    end: int = Field(description="offset just after the last character")
    type: PhiType

    @classmethod
    def of(cls, span: Span) -> "PhiSpan":
        return cls(start=span.start, end=span.end, type=span.type)


class DetectResponse(BaseModel):
    spans: list[PhiSpan] = Field(description="sorted, non-overlapping")
    redacted: str = Field(description="the text with each span replaced by [TYPE]")
    counts: dict[str, int] = Field(description="PHI type -> spans of that type")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "spans": [
                        {"start": 5, "end": 20, "type": "NAME"},
                        {"start": 24, "end": 34, "type": "DATE"},
                        {"start": 41, "end": 53, "type": "PHONE"},
                        {"start": 57, "end": 73, "type": "EMAIL"},
                    ],
                    "redacted": "Seen [NAME] on [DATE]; call [PHONE] or [EMAIL].",
                    "counts": {"NAME": 1, "DATE": 1, "PHONE": 1, "EMAIL": 1},
                }
            ]
        }
    }


class TooLarge(BaseModel):
    detail: str

    model_config = {"json_schema_extra": {"examples": [{"detail": TOO_LARGE}]}}


def redacted(text: str, spans: list[Span]) -> str:
    """``text`` with each span replaced by ``[TYPE]``: app.phi.redact without detecting again."""
    parts: list[str] = []
    pos = 0
    for span in spans:
        parts += [text[pos : span.start], f"[{span.type.value}]"]
        pos = span.end
    parts.append(text[pos:])
    return "".join(parts)


@router.post(
    "/detect",
    response_model=DetectResponse,
    responses={
        413: {"model": TooLarge, "description": "the text is over the limit"},
        429: {"description": "over the detect rate limit (Retry-After)"},
    },
    max_body_size=MAX_BODY_BYTES,
    dependencies=[DetectLimit],
)
async def detect_phi(body: DetectRequest, _: AdminOrAuditor) -> DetectResponse:
    """The PHI spans in ``text``, the text redacted, and the spans counted by type."""
    if len(body.text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, TOO_LARGE)
    # 100 kB takes the detector about half a second: keep the event loop free meanwhile.
    spans = await anyio.to_thread.run_sync(detect, body.text)
    counts = Counter(span.type.value for span in spans)
    for phi_type, count in counts.items():
        PHI_DETECTIONS.labels("api", phi_type).inc(count)
    return DetectResponse(
        spans=[PhiSpan.of(span) for span in spans],
        redacted=redacted(body.text, spans),
        counts=dict(counts),
    )
