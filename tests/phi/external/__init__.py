"""Labelled PHI sets the detector's author did not write (each directory's README says
who did and how): ``load("harbor")`` gives the set as :class:`tests.phi.corpus.Doc`s.

A set is ``<name>/notes.jsonl``: one text per line, ``{"id", "kind", "text", "phi":
[{"type", "value"}]}``. Every whole-word occurrence of a value in its text is gold of
that type, except one inside a longer gold value (``Rose`` inside ``Rose Grant``).
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from app.phi.types import PhiType
from tests.phi.corpus import Doc, Gold

ROOT = Path(__file__).resolve().parent


@dataclass
class Record:
    id: str
    kind: str
    doc: Doc


def names() -> list[str]:
    return sorted(p.parent.name for p in ROOT.glob("*/notes.jsonl"))


def _same_kind(a: str, b: str) -> bool:
    return (a.isalpha() and b.isalpha()) or (a.isdigit() and b.isdigit())


def _occurrences(text: str, value: str) -> list[tuple[int, int]]:
    # Not inside a longer word or number: "Ann" is no gold in "Annual", "94" is in "94yo".
    found = []
    for m in re.finditer(re.escape(value), text):
        a, b = m.start(), m.end()
        if a and _same_kind(text[a - 1], value[0]):
            continue
        if b < len(text) and _same_kind(text[b], value[-1]):
            continue
        found.append((a, b))
    return found


def parse(line: str, where: str) -> Record:
    item = json.loads(line)
    text = item["text"]
    spans: list[Gold] = []
    # Longest values first, so a shorter value inside a longer one is not counted twice.
    for entry in sorted(item["phi"], key=lambda e: -len(e["value"])):
        found = _occurrences(text, entry["value"])
        if not found:
            raise ValueError(f"{where}: a {entry['type']} value is not in its text")
        for start, end in found:
            if not any(g.start <= start and end <= g.end for g in spans):
                spans.append(Gold(start, end, PhiType(entry["type"])))
    return Record(item["id"], item.get("kind", ""), Doc(text, sorted(spans, key=lambda g: g.start)))


def load(name: str) -> list[Record]:
    path = ROOT / name / "notes.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [parse(line, f"{path.name}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
