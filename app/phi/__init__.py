"""PHI protection: detect and redact the HIPAA Safe Harbor identifiers in text.

``detect(text)`` returns sorted, non-overlapping :class:`Span` ``(start, end, type)``;
``redact(text)`` replaces each with ``[TYPE]``; :mod:`app.phi.logging` keeps PHI out of
log records. See ``app/PHI.md`` for what is detected, how well, and what is not.
"""

from app.phi.detector import contains_phi, detect, redact
from app.phi.types import PhiType, Span

__all__ = ["PhiType", "Span", "contains_phi", "detect", "redact"]
