"""Ages over 89, street addresses, cities/counties in context, and ZIP codes."""

import re
from collections.abc import Iterator

from app.phi.types import PhiType

Candidate = tuple[int, int, PhiType, int]

# --- ages over 89 ---------------------------------------------------------------------

_AGE_NUM = r"(?P<age>9\d|1[01]\d|12[0-5])"
_AGE_RES = [
    # 92-year-old, 92 years of age, 92-yr-old, 92 yrs
    re.compile(
        r"(?<![\d.])" + _AGE_NUM + r"\s*-?\s*(?:years?|yrs?)\b\.?(?:\s*-?\s*(?:old|of age)\b)?",
        re.IGNORECASE,
    ),
    # 92 yo, 92 y/o, 92 y.o., 92yo, 92 yof
    re.compile(
        r"(?<![\d.])" + _AGE_NUM + r"\s*(?:yo|y/o|y\.o\.?|yof|yom|y)(?![\w/])", re.IGNORECASE
    ),
    # aged 92, age: 92, age 92 (a full stop after it ends the sentence, "aged 100.")
    re.compile(r"\bage[d:]?\s*[:=]?\s*" + _AGE_NUM + r"(?!\d|\.\d)", re.IGNORECASE),
    # 92M, 92 F, 92 yo F (demographic shorthand)
    re.compile(r"(?<![\d.])" + _AGE_NUM + r"\s?(?:M|F|male|female|man|woman)\b"),
    # F 92, M/95, F, 97 (sex before age)
    re.compile(
        r"\b(?:M|F)[ \t]?[,/]?[ \t]?" + _AGE_NUM + r"(?!\d|\.\d|[ \t]?(?:%|mg|kg|mm|cm|ml|bpm))"
    ),
    # in her 90s, nonagenarian, centenarian
    re.compile(
        r"\b(?:(?:early|mid|late)[- ])?(?:90s|nineties|100s)\b|\bnonagenarian\b|\bcentenarian\b",
        re.IGNORECASE,
    ),
]
_TENS = r"(?:ninety|one hundred(?: and)?)"
_UNITS = r"(?:one|two|three|four|five|six|seven|eight|nine)"
_AGE_WORDS_RE = re.compile(
    r"\b" + _TENS + r"(?:[- ]" + _UNITS + r")?[- ]years?[- ]old\b"
    # "aged ninety-one", "is ninety-eight": a number word is an age after these
    r"|(?<=\baged )" + _TENS + r"(?:[- ]" + _UNITS + r")?\b"
    r"|(?<=\bage )" + _TENS + r"(?:[- ]" + _UNITS + r")?\b"
    r"|(?<=\bis )" + _TENS + r"(?:[- ]" + _UNITS + r")?\b"
    r"(?![- ](?:percent|per|mg|kg|minutes|seconds))",
    re.IGNORECASE,
)
# A name then an age over 89: "Folasade Adeyemi, 93, new confusion", "Pham Minh Chau 96 -"
# (bounded runs of blanks: an unbounded pair of them backtracks quadratically on a long
# run of spaces, which anyone can send)
_AGE_AFTER_NAME_RE = re.compile(
    r"[ \t]{0,3},?[ \t]{0,3}" + _AGE_NUM + r"(?=[ \t]{0,3}(?:[,;)\n]|[-–][ \t]|\.(?!\d)|$))"
)


def ages_after_names(text: str, name_ends: list[int]) -> Iterator[Candidate]:
    for end in name_ends:
        m = _AGE_AFTER_NAME_RE.match(text, end)
        if m:
            yield m.start("age"), m.end("age"), PhiType.AGE, 4


def find_ages(text: str) -> Iterator[Candidate]:
    for rx in _AGE_RES:
        for m in rx.finditer(text):
            yield m.start(), m.end(), PhiType.AGE, 4
    for m in _AGE_WORDS_RE.finditer(text):
        yield m.start(), m.end(), PhiType.AGE, 4


# --- addresses ------------------------------------------------------------------------

_STATES = (
    "AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ "
    "NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI"
).split()
_STATE_NAMES = (
    "Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|"
    "Idaho|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|"
    "Minnesota|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|"
    "New York|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|"
    "South Carolina|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|"
    "Wisconsin|Wyoming|Puerto Rico"
)
_STATE = r"(?:" + "|".join(_STATES) + r"|" + _STATE_NAMES + r")"
_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter"
    r"|Circle|Cir|Highway|Hwy|Parkway|Pkwy|Trail|Trl|Square|Sq|Loop|Row|Alley|Crescent|Cres|Close|Path"
    r"|Pike|Run|Plaza|Point|Pt|Ridge|Heights|Hts|Gardens|Grove|View|Walk|Mews|Route|Rte)"
)
_WORD = r"(?:\d+(?:st|nd|rd|th)|[A-Z][A-Za-z'\-]+|[A-Z]\.)"
_UNIT = (
    r"(?:,?\s*(?:Apt|Apartment|Unit|Suite|Ste|Fl|Floor|Rm|Room|Bldg|Building|#)"
    r"\.?\s*#?\s*[A-Za-z0-9-]+)"
)
_CITY = r"(?:[A-Z][a-z]+(?:[ \-][A-Z][a-z]+){0,2})"
_ZIP = r"(?P<zip>\d{5}(?:-\d{4})?)"
_STREET_RE = re.compile(
    r"\b\d{1,6}[A-Z]?(?:-\d{1,4})?\s+(?:[NSEW]\.?\s+|(?:North|South|East|West)\s+)?"
    r"(?:"
    + _WORD
    + r"\s+){1,4}"
    + _SUFFIX
    + r"\b\.?"
    + _UNIT
    + r"?"
    + r"(?:,?\s*"
    + _CITY
    + r"(?:(?:,\s*|\s+)"
    + _STATE
    + r"\b(?:,?\s*"
    + _ZIP
    + r")?|(?=\s*(?:[.,;\n]|$))))?",
)
_POBOX_RE = re.compile(r"\bP\.?\s*O\.?\s*Box\s+\d+\b", re.IGNORECASE)
_CITY_STATE_RE = re.compile(
    r"\b(?P<city>" + _CITY + r"),\s*(?P<state>" + _STATE + r")\b(?:,?\s*" + _ZIP + r")?"
)
_COUNTY_RE = re.compile(r"\b(?:[A-Z][a-z]+[ \-]){1,3}(?:County|Parish|Borough|Township)\b")
_PLACE_CUE_RE = re.compile(
    r"(?i:\b(?:lives|living|resides|residing|resident|moved|relocated|born|hometown|home town"
    r"|travel(?:l)?ed|visiting|city|town|village|township|neighbou?rhood)\s*(?:in|at|to|from|of|is)?"
    r"\s*[:\-]?\s*(?:the\s+)?(?:(?:city|town|village)\s+of\s+)?)(?P<place>" + _CITY + r")",
)
_ADDRESS_LINE_RE = re.compile(
    r"\b(?:home\s+|street\s+|mailing\s+)?address\s*[:\-]\s*(?P<rest>[^\n]{4,120}?)"
    r"(?=,?\s*\d{5}(?:-\d{4})?\b|[.;](?:\s|$)|\n|$)",
    re.IGNORECASE,
)
_ZIP_CUE_RE = re.compile(
    r"\b(?:zip|zip\s*code|postal\s*code|postcode)\s*[:#]?\s*(?P<zip>\d{5}(?:-\d{4})?)\b",
    re.IGNORECASE,
)
# two-letter states that are also credentials or words: only taken with a ZIP after them
_STATE_WORDS = frozenset("MD PA DO OR IN ME OK HI ID DE AS".split())
_NOT_PLACE = frozenset(
    "The A An This That Our His Her Their Emergency Hospital Clinic Unit Room Bed Cardiology Home "
    "Assisted Nursing Skilled Rehab Hospice January February March April May June July August "
    "September October November December Monday Tuesday Wednesday Thursday Friday Saturday "
    "Sunday".split()
)


def find_places(text: str) -> Iterator[Candidate]:
    for m in _STREET_RE.finditer(text):
        if m.group("zip"):
            yield m.start(), m.start("zip"), PhiType.ADDRESS, 3
            yield m.start("zip"), m.end("zip"), PhiType.ZIP, 4
        else:
            yield m.start(), m.end(), PhiType.ADDRESS, 3
    for m in _POBOX_RE.finditer(text):
        yield m.start(), m.end(), PhiType.ADDRESS, 3
    for m in _CITY_STATE_RE.finditer(text):
        if m.group("city").split()[0] in _NOT_PLACE:
            continue
        if not m.group("zip") and m.group("state") in _STATE_WORDS:
            continue  # "Jane Roe, MD", "seen in ER, OK"
        yield m.start("city"), m.end("city"), PhiType.ADDRESS, 4 if m.group("zip") else 3
        if m.group("zip"):
            yield m.start("zip"), m.end("zip"), PhiType.ZIP, 4
    for m in _COUNTY_RE.finditer(text):
        yield m.start(), m.end(), PhiType.ADDRESS, 3
    for m in _PLACE_CUE_RE.finditer(text):
        if m.group("place").split()[0] in _NOT_PLACE:
            continue
        yield m.start("place"), m.end("place"), PhiType.ADDRESS, 2
    for m in _ADDRESS_LINE_RE.finditer(text):
        rest = m.group("rest").rstrip(" .;")
        yield m.start("rest"), m.start("rest") + len(rest), PhiType.ADDRESS, 2
    for m in _ZIP_CUE_RE.finditer(text):
        yield m.start("zip"), m.end("zip"), PhiType.ZIP, 4
