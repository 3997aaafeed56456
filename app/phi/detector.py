"""The layered detector: every finder proposes candidates, overlaps are merged."""

from app.phi.dates import find_dates
from app.phi.geo import ages_after_names, find_ages, find_places
from app.phi.names import find_names
from app.phi.patterns import find_structured
from app.phi.types import PhiType, Span

Candidate = tuple[int, int, PhiType, int]
_DATE_PRIORITY = 4


def _candidates(text: str) -> list[Candidate]:
    found: list[Candidate] = []
    found.extend(find_structured(text))
    found.extend((a, b, PhiType.DATE, _DATE_PRIORITY) for a, b in find_dates(text))
    found.extend(find_ages(text))
    found.extend(find_places(text))
    names = list(find_names(text))
    found.extend(names)
    found.extend(ages_after_names(text, [end for _, end, _, _ in names]))
    return found


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start] in " \t\r\n,;:":
        start += 1
    while end > start and text[end - 1] in " \t\r\n,;:-":
        end -= 1
    return start, end


def merge(text: str, found: list[Candidate]) -> list[Span]:
    """Union overlapping candidates into sorted, non-overlapping spans. The type of a
    merged span is that of its highest-priority candidate (the longest on a tie)."""
    items = sorted((*_trim(text, a, b), t, p) for a, b, t, p in found)
    spans: list[Span] = []
    cur: list[Candidate] = []
    cur_end = -1
    for a, b, t, p in items:
        if a >= b:
            continue
        if cur and a < cur_end:
            cur.append((a, b, t, p))
            cur_end = max(cur_end, b)
            continue
        if cur:
            spans.append(_one(cur, cur_end))
        cur, cur_end = [(a, b, t, p)], b
    if cur:
        spans.append(_one(cur, cur_end))
    return spans


def _one(group: list[Candidate], end: int) -> Span:
    best = max(group, key=lambda c: (c[3], c[1] - c[0]))
    return Span(group[0][0], end, best[2])


def detect(text: str) -> list[Span]:
    """Find the PHI in ``text``: sorted, non-overlapping ``Span(start, end, type)``.

    Pure Python, no I/O. Raises ``TypeError`` (naming only the type) for a non-string:
    nothing here ever puts the text into an exception or a log record.
    """
    if not isinstance(text, str):
        raise TypeError(f"detect() needs str, not {type(text).__name__}")
    if not text:
        return []
    return merge(text, _candidates(text))


def redact(text: str) -> str:
    """``text`` with every detected span replaced by ``[TYPE]`` (e.g. ``[NAME]``)."""
    spans = detect(text)
    out: list[str] = []
    pos = 0
    for s in spans:
        out.append(text[pos : s.start])
        out.append(f"[{s.type.value}]")
        pos = s.end
    out.append(text[pos:])
    return "".join(out)


def contains_phi(text: str) -> bool:
    """Whether ``text`` holds any PHI (for flagging uploaded documents)."""
    return bool(detect(text))
