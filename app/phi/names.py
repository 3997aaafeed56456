"""Personal names: bundled name lists, capitalisation and context cues.

A token is a name when
- a cue stands before it (``Mr.``, ``Dr``, ``patient``, ``seen by``, ``daughter``) or a
  credential after it (``, MD``), even if no list knows it;
- two list names stand together (``Hope Bell``, ``john smith``), or a list name stands
  next to a capitalised word that is no common or clinical word (``Thaddeus Garcia``);
- a list name stands alone, capitalised (or lower-case, if it is no English word).

Names that are also words (``hope``, ``rose``, ``grant``, ``frank``) need capitals plus a
second name or a cue; eponyms followed by what they name (``Bell's palsy``, ``Graves
disease``, ``Stevens-Johnson syndrome``) are clinical terms, not people.
"""

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from app.phi.types import PhiType

Candidate = tuple[int, int, PhiType, int]


def _read(name: str) -> list[str]:
    data = resources.files("app.phi.data").joinpath(name).read_text(encoding="utf-8")
    return [w for line in data.splitlines() if not line.startswith("#") for w in line.split()]


@dataclass(frozen=True)
class Lexicon:
    first: frozenset[str]
    last: frozenset[str]
    ambiguous: frozenset[str]
    common: frozenset[str]
    eponyms: frozenset[str]
    heads: frozenset[str]
    terms: frozenset[str]
    census: frozenset[str]  # names only the census lists know (weaker evidence)


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The bundled lists, lower-cased. Fails loudly if the data files are missing: a
    detector without its name lists would silently pass names through."""
    med = _read("medical_terms.txt")
    sections: dict[str, set[str]] = {"[eponyms]": set(), "[heads]": set(), "[terms]": set()}
    current = None
    for w in med:
        if w in sections:
            current = w
        elif current is not None:
            sections[current].add(w.lower())
    first = frozenset(w.lower() for w in _read("first_names.txt"))
    last = frozenset(w.lower() for w in _read("surnames.txt"))
    terms = sections["[terms]"]
    common = frozenset(w.lower() for w in _read("common_words.txt"))
    # The census lists (no English words in them) add names of every origin the US
    # census counted; they never take a word from the clinical or common lists.
    known_words = terms | common | sections["[eponyms]"]  # "Whipple", "Apgar": not people
    census_first = frozenset(_read("census_first_names.txt")) - known_words
    census_last = frozenset(_read("census_surnames.txt")) - known_words
    # a clinical word that is also a name ("Iris", "Colon") is ambiguous, not a term
    return Lexicon(
        first=first | census_first,
        last=last | census_last,
        ambiguous=frozenset(w.lower() for w in _read("ambiguous_names.txt"))
        | (terms & (first | last)),
        common=common,
        eponyms=frozenset(sections["[eponyms]"]),
        heads=frozenset(sections["[heads]"]),
        terms=frozenset(terms - first - last),
        census=(census_first | census_last) - first - last,
    )


# Letters of any script: "Päivi", "Øvergaard", "Ó Murchú" are one token each, not cut
# at the first letter ASCII lacks.
_L = r"[^\W\d_\u00b2\u00b3\u00b9\u2070-\u209f]"  # not sub- or superscripts: "SpO₂"
_TOKEN_RE = re.compile(_L + r"(?:" + _L + r"|['’](?=" + _L + r")|-(?=" + _L + r"))*")
_POSSESSIVE_RE = re.compile(r"['’]s$", re.IGNORECASE)
_TITLE_CUE_RE = re.compile(
    r"(?:\b(?:mr|mrs|ms|miss|mx|mister|dr|drs|doctor|prof|professor|rev|sr|sister|fr"
    r"|nurse)\.?[ \t]*$)",
    re.IGNORECASE,
)
_ROLE_CUE_RE = re.compile(
    r"(?:\b(?:patient(?:'s)?(?:\s+name)?|pt\.?(?:\s+name)?|name|seen(?:\s+and\s+examined)?\s+by|referred\s+by"
    r"|referring(?:\s+(?:physician|provider|doctor|clinician))?|attending(?:\s+physician)?|resident|fellow"
    r"|intern|surgeon|physician|provider|pcp|np|pa|rn|lpn|cna|signed\s+by|electronically\s+signed\s+by"
    r"|dictated\s+by|transcribed\s+by|co-?signed\s+by|reviewed\s+by|verified\s+by|discussed\s+with"
    r"|spoke\s+(?:with|to)|called|son|daughter|wife|husband|mother|father|mom|dad|brother|sister|spouse"
    r"|partner|fianc[ée]e?|guardian|caregiver|nok|next\s+of\s+kin|(?:emergency\s+)?contact|aunt|uncle|niece"
    r"|nephew|grandson|granddaughter|grandmother|grandfather|grandchild|friend|neighbou?r|employer|boss"
    r"|roommate|landlord|interpreter|chaplain|named|cc|dear|attn|care\s+of|c/o|accompanied\s+by|with\s+(?:his|her|their)\s+\w+"
    # handover lists: "bed 6 frank dunmore", "BED 3 - KAMAU, WANJIRU", "cot 4 -"
    r"|(?:bed|cot|bay|cubicle|cube|room|rm|side\s+room)\s+[0-9]{1,3}[A-Za-z]?\s*[-:,]?)"
    r"[ \t]*[:,\-]?[ \t]*$)",
    re.IGNORECASE,
)
_CREDENTIAL_RE = re.compile(
    r"^,?[ \t]*(?:MD|M\.D\.|DO|D\.O\.|RN|NP|PA-C|PA|PhD|DNP|APRN|CNM|CRNA|LPN|MSW|LCSW|PharmD"
    r"|DDS|Jr\.?|Sr\.?|II|III|IV)\b"
)
_WEAK_CUE_RE = re.compile(
    r"\b(?:with|and|to|for|by|from|of|per|saw|see|called|visited)[ \t]+$", re.IGNORECASE
)
_ACTOR_VERB_RE = re.compile(
    r"[ \t]{1,4}(?:reports|reported|states|stated|denies|denied|complains|ambulated|ambulates"
    r"|tolerated|tolerates"
    r"|agrees|agreed|declines|declined|verbalized|verbalizes|endorses|endorsed|arrived|presented|presents"
    r"|says|said|walked|ate|slept|called|returned|refused|requested|asked|wants"
    r"|(?:is|was)[ \t]{1,3}an?[ \t]{1,3}\d+)\b"
)
_PERSON_VERB_RE = re.compile(
    r"[ \t]{1,4}(?:is|was|has|had|ambulated|ambulates|walked|refused|requested|asked|reports"
    r"|reported|states|stated|says|said|denies|denied|presents|presented"
    r"|complains|c/o|returns|returned|arrives|arrived|notes|noted|feels|felt|tolerated|tolerates|agrees|agreed"
    r"|declines|declined|understands|verbalized|verbalizes|endorses|endorsed|admits|lives|works|walks|"
    r"ambulates|ate|slept|called|came|went|wants|would|will|does|did|and|who"
    r"|,[ \t]{0,3}(?:a|an|age|aged)\b)\b"
)
_TITLES = frozenset("mr mrs ms miss mx mister dr drs doctor prof professor rev sr fr".split())
_LOWER_NOT_NAME_RE = re.compile(
    r"(?:ed|ing|ly|ous|ive|ile|ic|al|able|ible|ent|ant|ory|ary|ion|ness|ment|ity|ist|ism|ize|ise|es|ies"
    r"|tic|oid|emia|itis|osis|pathy|gram|scopy|tomy)$"
)
_BANNER_AFTER_RE = re.compile(
    r"[ \t]{0,4}(?:--?|\||;|,|/|\()?[ \t]{0,4}(?:DOB|D\.O\.B|MRN|DOS|Age\b|Sex\b)"
)
# An age right after a name: ", 71,", " 67M", ", 94 years", " 44 y", " 71 -"
_AGE_AFTER_RE = re.compile(
    r",?[ \t]{0,3}\d{1,3}(?:[ \t]?(?:[MF]\b|y/o|yo\b|y\b|yrs?\b|years?\b)|,|[ \t]{1,3}[-–][ \t])"
)
_UNKNOWN_SUFFIX_RE = re.compile(r"(?:ed|ing|ly|tion|sion|ment|ness|ity|ous|ive|al|ic)$")


@dataclass
class _Tok:
    start: int
    end: int
    word: str
    low: str
    cap: bool
    caps: bool
    listed: bool
    possessive: bool
    amb: bool
    common: bool
    med: bool
    census: bool


def _classify(text: str, lex: Lexicon) -> list[_Tok]:
    toks: list[_Tok] = []
    for m in _TOKEN_RE.finditer(text):
        word = m.group(0)
        end = m.end()
        possessive = len(word) > 3 and bool(_POSSESSIVE_RE.search(word))
        if possessive:
            word = word[:-2]
            end = m.start() + len(word)
        # accents folded for the word lists: "Sjögren", "Ménière" are the eponyms listed
        # as "sjogren", "meniere"
        low = unicodedata.normalize("NFKD", word.lower().replace("’", "'"))
        low = "".join(c for c in low if not unicodedata.combining(c))
        parts = low.split("-")
        listed = (
            low in lex.first
            or low in lex.last
            or (
                len(parts) > 1
                and all(p in lex.first or p in lex.last for p in parts)
                # "day-case", "long-term": a compound of words, not a double-barrelled name
                and (word[0].isupper() or not any(p in lex.common for p in parts))
            )
        )
        listed = listed or low.replace("'", "") in lex.last
        # A letter beyond ASCII ("Øvergaard", "zieliński", "Hēnare") is rare in English
        # clinical words and common in names; the eponyms that have one ("Ménière's",
        # "Sjögren's") are clinical terms by the rule below.
        foreign = (
            not listed
            and not word.isascii()
            and len(word) >= 2
            and not any(p in lex.eponyms for p in parts)
            and low not in lex.common
            and low not in lex.terms
        )
        listed = listed or foreign
        caps = len(word) > 1 and word.isupper()
        # weak evidence, like a name only the census knows: a word of another language
        # ("für", "Überweisung") has accents too
        census = low in lex.census or foreign
        if end < len(text) and (text[end].isdigit() or text[end] in "₂₃²³"):
            listed = False  # "PaCO2", "SpO₂", "T4": a name is never glued to a number
        if census and caps and len(word) <= 4:
            listed = False  # "AKI", "EHR", "DEA": shorthand that the census also counts
        toks.append(
            _Tok(
                start=m.start(),
                end=end,
                word=word,
                low=low,
                cap=word[0].isupper(),
                caps=caps,
                listed=listed,
                possessive=possessive,
                amb=low in lex.ambiguous,
                common=low in lex.common,
                med=low in lex.terms,
                census=census,
            )
        )
    # eponyms: "Bell's palsy", "Graves disease", "Stevens-Johnson syndrome", "Foley catheter"
    for i, t in enumerate(toks):
        parts = t.low.split("-")
        # a census-only name right before a head ("Barthel index", "Zimmer frame") is one too
        eponym = any(p in lex.eponyms for p in parts)
        if not (eponym or t.census):
            continue
        j = i + 1
        while eponym and j < len(toks) and toks[j].low in lex.eponyms and j - i < 3:
            j += 1
        if j < len(toks) and toks[j].low in lex.heads and toks[j].start - toks[j - 1].end <= 3:
            for k in range(i, j):
                toks[k].med = True
        elif (
            eponym
            and t.possessive
            and t.cap
            and (j >= len(toks) or not toks[j].cap or toks[j].start - t.end > 3)
        ):
            t.med = True  # "history of Parkinson's", not "Parkinson's Smith"
    return toks


def _gap(text: str, a: _Tok, b: _Tok) -> str:
    return text[a.end : b.start]


def _joinable(text: str, a: _Tok, b: _Tok, inverted: bool = False) -> bool:
    """Two tokens of one name: a space, a line break, or the dot of an initial between;
    a comma ("Smith, John") only where both are capitalised list names or ``inverted``."""
    g = _gap(text, a, b)
    if re.fullmatch(r"[ \t]{1,2}|[ \t]*\n[ \t]*", g):
        return True
    if re.fullmatch(r"\.[ \t]{0,2}", g):
        return len(a.word) == 1 and a.cap == b.cap
    if re.fullmatch(r",[ \t]", g):
        if a.cap and b.cap:
            return inverted or (a.listed and b.listed)
        return (
            inverted
            and not a.cap
            and not b.cap
            and a.listed
            and b.listed
            and not (a.common or b.common)
        )
    return False


_LIST_MARK_RE = re.compile(r"(?:^|\n)[ \t]*(?:\d+(?:\.\d+)*[.)]?|[a-z][.)]|[-*•#>|]+)[ \t]*$")


def _sentence_start(text: str, pos: int) -> bool:
    """At the start of a sentence, a line, a list item ("6.3 ", "5. ", "- ") or a table
    cell: a capital there says nothing about a name."""
    i = pos - 1
    while i >= 0 and text[i] in " \t\"'([*•-":
        i -= 1
    if i < 0 or text[i] in ".!?:;\n|#":
        return True
    return bool(_LIST_MARK_RE.search(text, max(0, pos - 24), pos))


def _namelike_after_cue(t: _Tok, nxt: "_Tok | None" = None) -> bool:
    if t.med or t.low in _TITLES:
        return False
    # a census-only name in lower case ("rockwood", "venturi") is judged like an unknown word
    if t.listed and not (t.census and not t.cap):
        if t.cap or not (t.amb or t.common):
            return True
        # "patient hope bell", "pt will hunter": a lower-case word-name counts when a
        # second list name follows
        return nxt is not None and nxt.listed and not nxt.cap
    if len(t.word) == 1:
        return t.cap
    if t.cap:
        return not t.common and not (t.caps and len(t.word) <= 4)
    # lower-case and unknown: "pt radomir grzelak"; not "pt afebrile", "pt reports"
    return len(t.word) >= 3 and not t.common and not _LOWER_NOT_NAME_RE.search(t.low)


def find_names(text: str) -> Iterator[Candidate]:
    lex = lexicon()
    toks = _classify(text, lex)
    n = len(toks)
    taken = [False] * n

    def emit(i: int, j: int, prio: int) -> Candidate:
        for k in range(i, j + 1):
            taken[k] = True
        return toks[i].start, toks[j].end, PhiType.NAME, prio

    # 1. cues before: titles and roles
    for i, t in enumerate(toks):
        line_start = text.rfind("\n", 0, t.start) + 1
        before = text[max(line_start, t.start - 48) : t.start]
        if not (_TITLE_CUE_RE.search(before) or _ROLE_CUE_RE.search(before)):
            continue
        nxt = toks[i + 1] if i + 1 < n and _joinable(text, t, toks[i + 1]) else None
        # one letter is an initial ("J. Smith") or an Irish particle ("Ó Briain")
        if not _namelike_after_cue(t, nxt) or (
            len(t.word) == 1 and t.word.isascii() and not text.startswith(".", t.end)
        ):
            continue
        weak = not t.listed or t.census
        if not t.cap and weak and (nxt is None or nxt.cap or not _namelike_after_cue(nxt)):
            continue  # "patient drove", "pt email": an unknown lower-case word needs a second one
        j = i
        while (
            j + 1 < n
            and j - i < 3
            and _joinable(text, toks[j], toks[j + 1], inverted=True)
            and (_continues(toks[j], toks[j + 1]))
        ):
            if "\n" in _gap(text, toks[j], toks[j + 1]) and not toks[j + 1].listed:
                break
            j += 1
        yield emit(i, j, 3)
    # 2. credentials after: "Quentara Vasko, MD"
    for i, t in enumerate(toks):
        after = text[t.end : t.end + 16]
        credential = (
            _CREDENTIAL_RE.match(after)
            and not re.match(r",?[ \t]*[A-Z]{2}[ \t]+\d{5}", after)
            # "Charge RN:", "Primary RN:": a role's label, not a person's credential
            and not re.match(r"[ \t]*[A-Za-z.\-]{2,6}[ \t]*[:*]", after)
        )
        if (
            not (credential or _BANNER_AFTER_RE.match(after))
            or not t.cap
            or not _namelike_after_cue(t)
        ):
            continue
        j = i
        while (
            j - 1 >= 0
            and i - j < 3
            and _joinable(text, toks[j - 1], toks[j], inverted=not credential)
            and toks[j - 1].cap
            and _namelike_after_cue(toks[j - 1])
        ):
            j -= 1
        if j < i or credential or toks[i].listed or _sentence_start(text, toks[i].start):
            yield emit(j, i, 3)
    # 3. runs of name-like tokens without a cue
    i = 0
    while i < n:
        if taken[i] or not _candidate(toks[i], text):
            i += 1
            continue
        j = i
        while (
            j + 1 < n
            and not taken[j + 1]
            and _joinable(text, toks[j], toks[j + 1])
            and (_candidate(toks[j + 1], text) or _lower_surname(toks[j], toks[j + 1]))
        ):
            j += 1
        run = toks[i : j + 1]
        keep = _decide(run, text)
        if keep is not None:
            a, b = keep
            yield emit(i + a, i + b, 2)
        i = j + 1


def _continues(prev: _Tok, t: _Tok) -> bool:
    """Whether ``t`` goes on the name that ``prev`` (already taken after a cue) began."""
    if prev.cap:
        return _namelike_after_cue(t) and (t.cap or len(prev.word) == 1)
    if t.cap:
        return False
    if t.listed or len(t.word) == 1:
        return True
    return _namelike_after_cue(t)


def _lower_surname(prev: _Tok, t: _Tok) -> bool:
    """ "jordan pomeroy": an unknown lower-case word after a lower-case list name."""
    return (
        not prev.cap
        and prev.listed
        and not prev.amb
        and not prev.common
        and not t.cap
        and _namelike_after_cue(t)
    )


def _candidate(t: _Tok, text: str) -> bool:
    if t.med or t.low in _TITLES:
        return False
    if t.listed:
        if t.caps and len(t.word) <= 3 and (t.amb or t.common):
            return False  # "DO", "ED", "MAY"
        return True  # lower-case word-names are only kept in pairs with a cue (_decide)
    if len(t.word) == 1:
        return text.startswith(".", t.end)
    if not t.cap or t.common or (t.caps and len(t.word) <= 5):
        return False
    return True


def _decide(run: list[_Tok], text: str) -> tuple[int, int] | None:
    """The part of a run of candidate tokens that is a name, as token indexes."""
    listed = [k for k, t in enumerate(run) if t.listed]
    if not listed:
        # one or two unknown capitalised words doing what people do: "Ysolde ambulated"
        if (
            len(run) <= 2
            and all(not t.caps for t in run)
            and _ACTOR_VERB_RE.match(text, run[-1].end)
        ):
            return 0, len(run) - 1
        # two or three followed by an age, as in handover lists: "Ioana Petrescu, 71,"
        if 2 <= len(run) <= 3 and _AGE_AFTER_RE.match(text, run[-1].end):
            return 0, len(run) - 1
        return None
    if len(run) == 1 and run[0].census and not run[0].cap:
        return None  # "rockwood", "abdo": a lone lower-case census-only name is a word
    if (
        len(run) == 1
        and run[0].census
        and _sentence_start(text, run[0].start)
        and not _PERSON_VERB_RE.match(text, run[0].end)
    ):
        return None  # "Überweisung für ...": a capital at a sentence start proves nothing
    word_name = run[0].amb or run[0].common
    if len(run) == 1 and word_name and re.match(r"[ \t]+\d", text[run[0].end :]):
        return None  # "Ward 7B", "Sun 16 Mar": a word-name before a number labels it
    strong = [
        k
        for k, t in enumerate(run)
        if t.listed and not t.amb and not t.common and (t.cap or len(t.word) >= 4)
    ]
    if any(not t.listed for t in run) and all(not t.cap for t in run) and strong:
        return 0, len(run) - 1
    lower = [t for t in run if t.listed and not t.cap]
    if lower and any(t.cap for t in run):
        # mixed case: keep only the capitalised part
        caps = [k for k, t in enumerate(run) if t.cap]
        # the last unbroken capitalised block ("Überweisung für Zelda Testperson")
        first = caps[-1]
        while first - 1 in caps:
            first -= 1
        sub = _decide(run[first : caps[-1] + 1], text)
        if sub is not None:
            return first + sub[0], first + sub[1]
        low = [
            k
            for k, t in enumerate(run)
            if not t.cap and t.listed and not t.amb and not t.common and len(t.word) >= 4
        ]
        return (low[0], low[-1]) if low else None
    if len(listed) >= 2:
        if all(not t.cap for t in run) and any(t.amb or t.common for t in run):
            # "hope bell": two lower-case word-names need a cue around them
            before = text[max(0, run[0].start - 12) : run[0].start]
            if not (_WEAK_CUE_RE.search(before) or _PERSON_VERB_RE.match(text, run[-1].end)):
                return None
        return 0, len(run) - 1
    k = listed[0]
    t = run[k]
    if strong:
        if len(run) == 1:
            return 0, 0
        # a list name with unknown capitalised neighbours: drop sentence-initial verbs etc.
        a = 0
        if (
            _sentence_start(text, run[0].start)
            and not run[0].listed
            and _UNKNOWN_SUFFIX_RE.search(run[0].low)
        ):
            a = 1
        return a, len(run) - 1
    # one ambiguous/common list name: needs a capital mid-sentence, or a verb of a person after it
    if not t.cap or t.common:
        return None
    if _sentence_start(text, t.start) and not _PERSON_VERB_RE.match(text, run[-1].end):
        return None
    if t.caps and len(run) == 1:
        return None
    return 0, len(run) - 1


# Load the lists at import: a build that lost them (e.g. a wheel without package data)
# fails when the app starts, not silently on the first text it should have protected.
lexicon()
