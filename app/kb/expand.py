"""Query expansion: the clinical shorthand in a question, spelled out.

Clinicians search the way they write notes ("PIVC looks red, VIP 2?", "pt on
tazocin"), while policies spell things out. The small embedding model and the
English full-text parser both miss that an abbreviation and its expansion are
the same thing, so each abbreviation found in the question is followed by its
expansion before the question is embedded and its lexemes taken:
"PIVC looks red" -> "PIVC (peripheral intravenous cannula) looks red".

The list (abbreviations.tsv) was written from general knowledge of hospital
usage, not from the evaluation sets' questions. Matching is case-insensitive on
whole tokens; an abbreviation with several hospital meanings gets all of them.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

LIST = Path(__file__).with_name("abbreviations.tsv")
# a token: letters, digits and the joiners shorthand uses (K+, U&E, r/v, d/c, IV-push)
TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9+&/.'-]*[A-Za-z0-9+]|[A-Za-z0-9]")
MAX_WORDS = 3  # the longest abbreviation matched, in words ("c diff", "art line")
# English words that are also abbreviations (OR, IT, PO...): typed in lower case they
# are the word, and only in capitals the abbreviation.
WORDS = frozenset(
    "a am an as at be by do go he if in is it me my no of on or so to up us we all and are"
    " can cap did for had has her his may not off our out per she the was who why you".split()
)


@functools.cache
def abbreviations() -> dict[str, str]:
    """Lower-cased abbreviation -> its expansion(s), " / " replaced by spaces."""
    table: dict[str, str] = {}
    for line in LIST.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith(("#", "abbreviation\t")):
            continue
        short, _, expansion = line.partition("\t")
        table[short.strip().lower()] = " ".join(expansion.replace(" / ", " ").split())
    return table


def expand(question: str) -> str:
    """The question with each abbreviation followed by its expansion in parentheses."""
    table = abbreviations()
    tokens = list(TOKEN.finditer(question))
    out: list[str] = []
    last = 0
    i = 0
    while i < len(tokens):
        for width in range(min(MAX_WORDS, len(tokens) - i), 0, -1):
            span = tokens[i : i + width]
            typed = question[span[0].start() : span[-1].end()]
            words = typed.lower()
            if typed in WORDS:
                continue
            expansion = table.get(" ".join(words.split())) or table.get(words.rstrip(".'"))
            if expansion and expansion != words:
                end = span[-1].end()
                out.append(question[last:end] + f" ({expansion})")
                last = end
                i += width
                break
        else:
            i += 1
    out.append(question[last:])
    return "".join(out)
