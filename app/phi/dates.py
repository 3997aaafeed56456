"""Dates: every element of a date except the year alone (HIPAA Safe Harbor (C)).

Numeric forms are validated as calendar dates (month/day or day/month); textual forms
need a month name next to a day number or a four-digit year. Partial numeric forms
(``3/5``) and compact forms (``19500305``) are only taken after a date cue, because
``5/5 strength`` and eight-digit record numbers look the same.
"""

import re
from collections.abc import Iterator

from app.phi.validate import date_ok

_MONTHS = {
    "january": 1,
    "february": 2,
    "march": 3,
    "april": 4,
    "may": 5,
    "june": 6,
    "july": 7,
    "august": 8,
    "september": 9,
    "october": 10,
    "november": 11,
    "december": 12,
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "sept": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
}
_MONTH = r"(?P<mon>" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_MONTH2 = _MONTH.replace("?P<mon>", "?P<mon2>")
_WEEKDAY = (
    r"(?:(?:mon|tues?|wed(?:nes)?|thu(?:rs?)?|fri|sat(?:ur)?|sun)(?:day)?\.?,?\s+(?:the\s+)?)?"
)
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d{2}|'?\d{2})"
_SP = r"[\s,.\-/]*"  # separators, newlines included: a date can wrap

_TEXTUAL = [
    # 5 Mar 2024, 5th March, the 5th of March, 05-Mar-24, Tuesday 5 March 2024
    _WEEKDAY + r"\b" + _DAY + r"(?:\s+of)?" + _SP + _MONTH + r"(?:" + _SP + _YEAR + r")?\b",
    # March 5th, March 5, 2024, Mar. 05 2024, Mar-05-2024, Tuesday, March 5
    _WEEKDAY + r"\b" + _MONTH + _SP + r"(?:the\s+)?" + _DAY + r"(?!\s*(?:mg|ml|mcg|kg|%))"
    r"(?:(?:,\s*|" + _SP + r")" + _YEAR + r")?\b",
    # March 2024, Mar '24 (month and year)
    r"\b" + _MONTH + r",?\s+(?P<year>(?:19|20)\d{2}|'\d{2})\b",
]
_TEXTUAL_RE = [re.compile(p, re.IGNORECASE) for p in _TEXTUAL]

# 2024-03-05, 2024/3/5, 2024.03.05 (also with a time after it: the time is kept)
_ISO_RE = re.compile(
    r"(?<![\d.])(?P<year>(?:19|20)\d{2})(?P<sep>[-/.])(?P<a>[01]?\d)(?P=sep)(?P<b>[0-3]?\d)(?![\d])"
)
# 03/05/2024, 3-5-24, 5.3.24, 05.03.2024
_NUMERIC_RE = re.compile(
    r"(?<![\d./:-])(?P<a>[0-3]?\d)(?P<sep>[-/.])(?P<b>[0-3]?\d)(?P=sep)(?P<year>(?:19|20)\d{2}|\d{2})"
    r"(?![\d]|\.\d|/\d)"
)
# 03/2024 (month and year)
_MONTH_YEAR_RE = re.compile(
    r"(?<![\d./-])(?P<a>0?[1-9]|1[0-2])[/-](?P<year>(?:19|20)\d{2})(?![\d/])"
)

_CUE = (
    r"(?:\b(?:DOB|D\.O\.B\.?|birth ?date|date of birth|born|dated?|on|since|from|until|till|thru"
    r"|through|admitted|admission|discharged?|discharge date|seen|visit|DOS|DOD|died|deceased"
    r"|expired|last seen|onset|started|stopped|effective|surgery|procedure|before|after|by"
    # an event or a test with its day: "fell 10/3", "CT 14/06:", "handover 20/01"
    r"|fell|fall|injury|handover|CT|MRI|x-?ray|scan|echo|ECG|op)"
    r"\b[:.]?\s*(?:on\s+)?)"
)
# 3/5, 03-05 after a cue
_PARTIAL_RE = re.compile(
    _CUE + r"(?P<a>[0-3]?\d)(?P<sep>[/-])(?P<b>[0-3]?\d)(?![\d/.]|-\d)", re.IGNORECASE
)
# 03051950, 19500305 after a cue
_COMPACT_RE = re.compile(_CUE + r"(?P<num>\d{8}|\d{6})(?!\d)", re.IGNORECASE)


def _year(value: str | None) -> int | None:
    if value is None:
        return None
    v = value.lstrip("'")
    return int(v) if len(v) == 4 else 2000 + int(v)


def _numeric_ok(a: int, b: int, year: int | None) -> bool:
    return date_ok(year, a, b) or date_ok(year, b, a)


def find_dates(text: str) -> Iterator[tuple[int, int]]:
    """Yield ``(start, end)`` of each date in ``text`` (may overlap; the caller merges)."""
    for rx in _TEXTUAL_RE:
        for m in rx.finditer(text):
            mon = _MONTHS[m.group("mon").lower().rstrip(".")]
            day = m.groupdict().get("day")
            if day is not None and not date_ok(None, mon, int(day)):
                continue
            if day is None and m.group("year") is None:
                continue
            # "may 5" as a verb: only with a capital or a year or an ordinal
            if (
                m.group("mon").lower() == "may"
                and m.group("mon")[0] == "m"
                and not (m.group("year") or re.search(r"\d(?:st|nd|rd|th)", m.group(0)))
            ):
                continue
            yield m.start(), m.end()
    for m in _ISO_RE.finditer(text):
        if date_ok(int(m.group("year")), int(m.group("a")), int(m.group("b"))):
            yield m.start(), m.end()
    for m in _NUMERIC_RE.finditer(text):
        if _numeric_ok(int(m.group("a")), int(m.group("b")), _year(m.group("year"))):
            yield m.start(), m.end()
    for m in _MONTH_YEAR_RE.finditer(text):
        yield m.start(), m.end()
    for m in _PARTIAL_RE.finditer(text):
        if _numeric_ok(int(m.group("a")), int(m.group("b")), None):
            yield m.start("a"), m.end("b")
    for m in _COMPACT_RE.finditer(text):
        num = m.group("num")
        if _compact_ok(num):
            yield m.start("num"), m.end("num")


def _compact_ok(num: str) -> bool:
    if len(num) == 8:
        y1, mo1, d1 = int(num[:4]), int(num[4:6]), int(num[6:])  # yyyymmdd
        y2, a, b = int(num[4:]), int(num[:2]), int(num[2:4])  # mmddyyyy / ddmmyyyy
        return (1900 <= y1 <= 2099 and date_ok(y1, mo1, d1)) or (
            1900 <= y2 <= 2099 and _numeric_ok(a, b, y2)
        )
    a, b, y = int(num[:2]), int(num[2:4]), 2000 + int(num[4:])
    return _numeric_ok(a, b, y)
