"""Structured identifiers: regexes with validation, and values that follow a cue word.

Each finder yields ``(start, end, PhiType, priority)`` candidates; the detector merges
them. Priority decides the type where candidates overlap (higher wins).
"""

import re
from collections.abc import Iterator

from app.phi.types import PhiType
from app.phi.validate import dea_ok, digits, iban_ok, ip_ok, luhn_ok, ssn_plausible, vin_ok

Candidate = tuple[int, int, PhiType, int]

# --- contact points -------------------------------------------------------------------

_EMAIL_RE = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"
)
_URL_RE = re.compile(r"(?:\b(?:https?|ftp|sftp)://|\bwww\.)[^\s<>\"'()\[\]{}]+", re.IGNORECASE)
# A bare host name (``clinic.example.org/path``): a dotted run matched once from its
# start, its last listed top-level label found in Python. A regex that searched for the
# label itself backtracked over the whole run from every label: quadratic on long
# dotted runs (seconds for 8,000 characters), which anyone can paste into a question.
_DOTTED_RE = re.compile(r"(?<![\w.-])[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?:/[^\s<>\"'()\[\]{}]*)?")
_TLDS = frozenset(
    "com org net edu gov mil int io health info biz us uk ca test example invalid local med"
    " care clinic hospital".split()
)


def _bare_host(text: str, match: re.Match[str]) -> tuple[int, int] | None:
    """The span of the host name (and its path) in a dotted run, or None."""
    run = match.group(0)
    host, slash, path = run.partition("/")
    labels = host.split(".")
    last = max((i for i, label in enumerate(labels) if i > 0 and label.lower() in _TLDS), default=0)
    if not last:
        return None
    start = match.start() + len(run) - len(run.lstrip("-"))  # a name starts at a letter or digit
    end = match.start() + len(".".join(labels[: last + 1]))
    if last == len(labels) - 1 and slash:
        while path and not (path[-1].isalnum() or path[-1] == "_"):
            path = path[:-1]
        if path:  # the path up to its last word character, as a URL ends
            end += 1 + len(path)
    return start, end


_GAP = r"[ \t]*(?:[.\-][ \t]*)?(?:\n[ \t]*)?"  # a separator that may wrap onto the next line
_PHONE_RE = re.compile(
    r"(?<![\w/.-])(?:(?P<cc>\+?1)[ \t.-]*)?(?:\((?P<area1>\d{3})\)|(?P<area2>\d{3}))"
    + _GAP
    + r"(?P<exch>\d{3})"
    + _GAP
    + r"(?P<line>\d{4})"
    r"(?:[ \t]*(?:x|ext\.?|extension)[ \t]*\d{1,6})?(?![\w/-]|\.\d)",
    re.IGNORECASE,
)
_INTL_PHONE_RE = re.compile(
    r"(?<![\w+])\+(?:[2-9]\d{0,2})(?:[ \t.-]?\(?\d{1,4}\)?){2,5}\d(?![\w/-])"
)
_FAX_CUE_RE = re.compile(r"\bfax|\bfacsimile|\bF\s*[:#]\s*$", re.IGNORECASE)
_PHONE_CUE_RE = re.compile(
    r"\b(?:phone|tel|telephone|cell|mobile|pager|call|ph|reached)\b", re.IGNORECASE
)


def _phone_kind(text: str, start: int) -> PhiType:
    """FAX when the nearest cue before the number on its line says fax."""
    line_start = text.rfind("\n", 0, max(0, start - 1)) + 1
    before = text[max(line_start, start - 48) : start]
    fax = [m.end() for m in _FAX_CUE_RE.finditer(before)]
    phone = [m.end() for m in _PHONE_CUE_RE.finditer(before)]
    if fax and (not phone or fax[-1] > phone[-1]):
        return PhiType.FAX
    return PhiType.PHONE


_IPV4_RE = re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d]|\.\d)")
_IPV6_RE = re.compile(
    r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,7}(?::|(?::[0-9A-Fa-f]{1,4}){1,7}|[0-9A-Fa-f]{1,4})(?![\w:])"
)
_MAC_RE = re.compile(r"(?<![\w:-])(?:[0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}(?![\w:-])")

# --- numbers with a shape of their own ------------------------------------------------

_SSN_RE = re.compile(r"(?<![\w-])(?P<a>\d{3})(?P<s>[- ])(?P<g>\d{2})(?P=s)(?P<n>\d{4})(?![\w-])")
_CARD_RE = re.compile(r"(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-])")
_IBAN_RE = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_VIN_RE = re.compile(r"\b[A-HJ-NPR-Z0-9]{17}\b")
_DEA_RE = re.compile(r"\b[A-Z][A-Z9]\d{7}\b")
_MBI_RE = re.compile(
    r"\b[1-9][AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y][AC-HJKMNP-RT-Y0-9]\d-?[AC-HJKMNP-RT-Y]{2}\d\d\b"
)
_UDI_RE = re.compile(r"\(01\)\d{14}(?:\(\d{2,4}\)[A-Za-z0-9-]+)*")
_ZIP4_RE = re.compile(r"(?<![\d-])\d{5}-\d{4}(?![\d-])")
_STR_RE = re.compile(
    r"\b(?:D\d{1,2}S\d{2,4}|TH01|TPOX|CSF1PO|FGA|vWA|AMEL|Penta [DE])\s*[:=]?\s*"
    r"(?:\d{1,2}(?:\.\d)?|[XY])(?:\s*[,/]\s*(?:\d{1,2}(?:\.\d)?|[XY]))?"
)
# long digit runs and mixed codes not otherwise explained
_LONG_NUM_RE = re.compile(r"(?<![\w.,/-])\d(?:[-]?\d){6,}(?![\w/]|[.,]\d)")
_CODE_RE = re.compile(
    r"(?<![\w-])(?=[A-Z0-9-]*\d)(?=[A-Z0-9-]*[A-Z])[A-Z0-9][A-Z0-9-]{6,}[A-Z0-9](?![\w-])"
)
_UNIT_RE = re.compile(
    r"^\d+(?:mg|mcg|ml|kg|mm|cm|hrs?|mins?|units?|iu|meq|mmol|g|l|bpm|mmhg)$", re.IGNORECASE
)

# --- cue words and the value after them -----------------------------------------------

_NUMWORD = r"(?:\s*(?:#|no\.?|num(?:ber)?\.?|nbr\.?|id|code)\b\.?)?"
_CUES: list[tuple[PhiType, str]] = [
    (
        PhiType.SSN,
        r"\bSSN|\bSS#|\bsocial security(?: number| no\.?| #)?|\bSSA\s*#|\bITIN|\btax ?id",
    ),
    (
        PhiType.MRN,
        r"\bMRN|\bMR\s*#|\bMR\s*(?:no|number)\b|\bmed(?:ical)?\.?\s*rec(?:ord)?s?\.?"
        + _NUMWORD
        + r"|\bhosp(?:ital)?\.?\s*(?:#|no\b|number|id\b)|\bchart\s*(?:#|no\b|number|id\b)"
        r"|\bunit\s*(?:#|no\b|number)"
        + r"|\b(?:patient|pt)\.?\s*(?:id|#|no\b|number)|\bPID\b|\bEMR\s*(?:#|id|no\b|number)?"
        r"|\bEHR\s*(?:#|id|number)",
    ),
    (
        PhiType.HEALTH_PLAN,
        r"\bmember\s*(?:id|#|no\b|number)|\bsubscriber\s*(?:id|#|no\b|number)|\bpolicy"
        + _NUMWORD
        + r"|\binsurance\s*(?:id|#|no\b|number)|\bplan\s*(?:id|#|no\b|number)|\bgroup\s*(?:#"
        r"|no\b|number)"
        + r"|\bmedicare(?:\s*(?:id|#|no\b|number|MBI))?|\bMBI\b|\bHICN?\b|\bmedicaid"
        + _NUMWORD
        + r"|\bbeneficiary\s*(?:id|#|no\b|number)|\bhealth\s*plan\s*(?:id|#|no\b|number)"
        r"|\bBIN\b|\bPCN\b|\bRxGrp",
    ),
    (
        PhiType.ACCOUNT,
        r"\bacc(?:oun)?t\.?"
        + _NUMWORD
        + r"|\bbilling\s*(?:#|id|no\b|number|account)"
        + r"|\binvoice"
        + _NUMWORD
        + r"|\bencounter\s*(?:#|id|no\b|number)|\bvisit\s*(?:#|id|no\b|number)"
        + r"|\bFIN\b|\bCSN\b|\bHAR\b|\bcard\s*(?:#|no\b|number|on\s+file)|\bcredit card"
        r"|\bdebit card|\bIBAN|\brouting"
        + r"|\bclaim"
        + _NUMWORD
        + r"|\bguarantor\s*(?:#|id|no\b|number)",
    ),
    (
        PhiType.VEHICLE,
        r"\blicen[cs]e\s*plate"
        + _NUMWORD
        + r"|\bplate"
        + _NUMWORD
        + r"|\btag\s*(?:#|no\b|number)"
        + r"|\bVIN\b|\bvehicle\s*(?:id|#|no\b|number|identification number)|\bregistration\s*plate",
    ),
    (
        PhiType.LICENSE,
        r"\b(?:driver'?s?\s*)?licen[cs]e(?!\s*plate)"
        + _NUMWORD
        + r"|\bDL\s*#?|\bDEA"
        + _NUMWORD
        + r"|\bNPI\b|\bcertificate"
        + _NUMWORD
        + r"|\bcert\.?\s*#|\bpassport"
        + _NUMWORD
        + r"|\bpermit\s*(?:#|no\b|number)"
        + r"|\bregistration\s*(?:#|no\b|number)|\bcertification\s*(?:#|no\b|number)",
    ),
    (
        PhiType.DEVICE,
        r"\bserial"
        + _NUMWORD
        + r"|\bS/N|\bSN\b|\bdevice\s*(?:id|#|no\b|number|serial|identifier)"
        + r"|\bUDI\b|\bIMEI|\bMEID|\bmodel\s*(?:#|no\b|number)|\blot\s*(?:#|no\b|number)"
        r"|\bimplant\s*(?:id|#|serial)"
        + r"|\basset\s*tag|\bMAC(?:\s*address)?|\bpump\s*(?:id|#)|\bpacemaker\s*(?:id|#)"
        r"|\bICD\s*serial",
    ),
    (
        PhiType.BIOMETRIC,
        r"\bfinger\s*print(?:s)?(?:\s*(?:template|hash|id|scan))?|\bvoice\s*print(?:\s*(?:id|hash))?"
        + r"|\bretina(?:l)?\s*scan|\biris\s*(?:scan|template|code)|\bpalm\s*print|\bface\s*print"
        r"|\bfacial\s*(?:template|signature|geometry)"
        + r"|\bbiometric\s*(?:id|template|hash|identifier|record)|\bgait\s*signature"
        r"|\bDNA\s*profile|\bvein\s*pattern",
    ),
    (
        PhiType.ID,
        r"\bID\b|\bidentifier|\bref(?:erence)?\s*(?:#|no\b|number)|\bcase\s*(?:#|no\b|number|id)"
        + r"|\bspecimen\s*(?:#|id|no\b|number)|\baccession"
        + _NUMWORD
        + r"|\border\s*(?:#|no\b|number|id)"
        + r"|\bemployee\s*(?:id|#|no\b|number)|\bbadge\s*(?:#|id|no\b|number)?|\bstudent\s*(?:id"
        r"|#)|\bbarcode"
        + r"|\brequisition"
        + _NUMWORD
        + r"|\bconfirmation"
        + _NUMWORD
        + r"|\bstudy\s*(?:id|#|number)|\bsubject\s*(?:id|#)"
        + r"|\btracking"
        + _NUMWORD
        + r"|\bcontrol"
        + _NUMWORD
        + r"|#(?=\s*[A-Z0-9]*\d)",
    ),
]
_CUE_RE = [(t, re.compile(r"(?:" + p + r")", re.IGNORECASE)) for t, p in _CUES]
_FILLER_RE = re.compile(
    r"(?:[ \t]*(?:[:#=.]|-(?!\d)|\bis\b|\bof\b|\bnumber\b|\bno\b\.?|\bid\b"
    r"|\bwas\b)?[ \t]*){0,4}(?:\n[ \t]*)?",
    re.IGNORECASE,
)
_PIECE_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9]|[-./](?=[A-Za-z0-9]))*")
_NOT_VALUES = frozenset("NA N/A NONE UNKNOWN PENDING NOT TBD UNK".split())
_MAX_LEN = {PhiType.SSN: 11, PhiType.MRN: 16, PhiType.VEHICLE: 17}
_DEFAULT_MAX = 24


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def _value_after(text: str, pos: int, kind: PhiType) -> tuple[int, int] | None:
    """The identifier value that starts after a cue ending at ``pos``: pieces joined by
    a space, a hyphen or one line break (a value wrapped onto the next line)."""
    m = _FILLER_RE.match(text, pos)
    start = m.end() if m else pos
    piece = _PIECE_RE.match(text, start)
    if piece is None:
        return None
    first = piece.group(0)
    # a word, not a value: "plate was dirty", "ID band checked"
    letters_only = not _has_digit(first)
    plate_like = False
    if letters_only:
        plate_like = (
            kind in (PhiType.VEHICLE, PhiType.BIOMETRIC, PhiType.DEVICE)
            and first.isupper()
            and 2 <= len(first) <= 20
            and first not in _NOT_VALUES
        )
        prefix = first.isupper() and len(first) <= 4  # "XYZ 123456789"
        if not (plate_like or prefix):
            return None
    end = piece.end()
    total = len(first)
    limit = _MAX_LEN.get(kind, _DEFAULT_MAX)
    while True:
        gap = re.match(r"(?:[ \t]?-?[ \t]?\n[ \t]*|[ \t]|-)", text[end:])
        if gap is None:
            break
        nxt = _PIECE_RE.match(text, end + gap.end())
        if nxt is None:
            break
        val = nxt.group(0)
        if not _has_digit(val) and not (
            val.isupper() and len(val) <= 4 and "\n" not in gap.group(0)
        ):
            break
        if "/" in val or total + len(val) > limit:
            break
        if _UNIT_RE.match(val) or re.match(
            r"\s*(?:mg|ml|mcg|kg|%|mmhg|bpm)\b", text[nxt.end() :], re.IGNORECASE
        ):
            break
        total += len(val)
        end = nxt.end()
    if letters_only and end == piece.end() and not plate_like:
        return None
    return start, end


def find_structured(text: str) -> Iterator[Candidate]:
    for m in _EMAIL_RE.finditer(text):
        yield m.start(), m.end(), PhiType.EMAIL, 7
    for m in _URL_RE.finditer(text):
        end = m.end()
        while end > m.start() and text[end - 1] in ".,;:!?":
            end -= 1
        yield m.start(), end, PhiType.URL, 7
    for m in _DOTTED_RE.finditer(text):
        span = _bare_host(text, m)
        if span:
            yield span[0], span[1], PhiType.URL, 7
    for m in _PHONE_RE.finditer(text):
        yield m.start(), m.end(), _phone_kind(text, m.start()), 4
    for m in _INTL_PHONE_RE.finditer(text):
        if 8 <= len(digits(m.group(0))) <= 15:
            yield m.start(), m.end(), _phone_kind(text, m.start()), 4
    for m in _IPV4_RE.finditer(text):
        if ip_ok(m.group(0)):
            yield m.start(), m.end(), PhiType.IP, 4
    for m in _IPV6_RE.finditer(text):
        v = m.group(0)
        if (v.count(":") >= 7 or "::" in v) and len(v) >= 6 and ip_ok(v):
            yield m.start(), m.end(), PhiType.IP, 4
    for m in _MAC_RE.finditer(text):
        yield m.start(), m.end(), PhiType.DEVICE, 4
    for m in _SSN_RE.finditer(text):
        if m.group("s") == "-" or ssn_plausible(m.group("a"), m.group("g"), m.group("n")):
            yield m.start(), m.end(), PhiType.SSN, 4
    for m in _CARD_RE.finditer(text):
        ds = digits(m.group(0))
        if 13 <= len(ds) <= 19 and luhn_ok(ds):
            yield m.start(), m.end(), PhiType.ACCOUNT, 3
    for m in _IBAN_RE.finditer(text):
        if iban_ok(m.group(0)):
            yield m.start(), m.end(), PhiType.ACCOUNT, 4
    for m in _VIN_RE.finditer(text):
        if vin_ok(m.group(0)) and not m.group(0).isdigit():
            yield m.start(), m.end(), PhiType.VEHICLE, 4
    for m in _DEA_RE.finditer(text):
        if dea_ok(m.group(0)):
            yield m.start(), m.end(), PhiType.LICENSE, 3
    for m in _MBI_RE.finditer(text):
        yield m.start(), m.end(), PhiType.HEALTH_PLAN, 3
    for m in _UDI_RE.finditer(text):
        yield m.start(), m.end(), PhiType.DEVICE, 4
    for m in _ZIP4_RE.finditer(text):
        yield m.start(), m.end(), PhiType.ZIP, 2
    for m in _STR_RE.finditer(text):
        yield m.start(), m.end(), PhiType.BIOMETRIC, 3
    for m in _LONG_NUM_RE.finditer(text):
        yield m.start(), m.end(), PhiType.ID, 1
    for m in _CODE_RE.finditer(text):
        if not _UNIT_RE.match(m.group(0)):
            yield m.start(), m.end(), PhiType.ID, 1
    for kind, rx in _CUE_RE:
        for m in rx.finditer(text):
            value = _value_after(text, m.end(), kind)
            if value is None:
                continue
            if kind is PhiType.ID and m.group(0) == "#":
                yield value[0], value[1], kind, 1
            else:
                yield value[0], value[1], kind, 6
