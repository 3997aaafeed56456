"""Recall and precision of a detector on the labelled corpus, per PHI type.

- recall of a gold span: every letter and digit of it lies inside some predicted span,
  whatever that span's type (what redaction needs). ``typed`` recall also asks for the
  same type.
- precision of a predicted span: it overlaps a letter or digit of some gold span.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tests.phi.corpus import Doc

Predicted = tuple[int, int, str]
Predictor = Callable[[str], Iterable[Predicted]]


@dataclass
class Counts:
    gold: int = 0
    found: int = 0
    typed: int = 0
    predicted: int = 0
    correct: int = 0

    @property
    def recall(self) -> float | None:
        return self.found / self.gold if self.gold else None

    @property
    def typed_recall(self) -> float | None:
        return self.typed / self.gold if self.gold else None

    @property
    def precision(self) -> float | None:
        return self.correct / self.predicted if self.predicted else None


@dataclass
class Report:
    per_type: dict[str, Counts] = field(default_factory=dict)
    missed: list[tuple[str, str]] = field(default_factory=list)  # (type, text): for debugging only
    false_positives: list[tuple[str, str]] = field(default_factory=list)

    def counts(self, kind: str) -> Counts:
        return self.per_type.setdefault(kind, Counts())

    def total(self) -> Counts:
        t = Counts()
        for c in self.per_type.values():
            t.gold += c.gold
            t.found += c.found
            t.typed += c.typed
            t.predicted += c.predicted
            t.correct += c.correct
        return t


def evaluate(docs: list[Doc], predict: Predictor) -> Report:
    report = Report()
    for doc in docs:
        text = doc.text
        n = len(text)
        preds = list(predict(text))
        covered = bytearray(n)
        typed_cover: dict[str, bytearray] = {}
        for a, b, kind in preds:
            covered[a:b] = b"\x01" * (b - a)
            typed_cover.setdefault(kind, bytearray(n))[a:b] = b"\x01" * (b - a)
        gold_mask = bytearray(n)
        for g in doc.spans:
            pos = [i for i in range(g.start, g.end) if text[i].isalnum()]
            for i in pos:
                gold_mask[i] = 1
            c = report.counts(g.type.value)
            c.gold += 1
            if all(covered[i] for i in pos):
                c.found += 1
            else:
                report.missed.append((g.type.value, text[g.start : g.end]))
            tc = typed_cover.get(g.type.value)
            if tc is not None and all(tc[i] for i in pos):
                c.typed += 1
        for a, b, kind in preds:
            c = report.counts(kind)
            c.predicted += 1
            if any(gold_mask[a:b]):
                c.correct += 1
            else:
                report.false_positives.append((kind, text[a:b]))
    return report
