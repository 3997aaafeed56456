"""The detector's speed on ordinary text and its worst case on adversarial input.

    python -m tests.phi.bench [--length 100000] [--out phi-bench.json]

Ordinary text: the generated corpus (tests/phi/corpus.py), all of it, in characters a
second. Worst case: ``detect()`` on ``--length`` characters of each adversarial shape
(tests/phi/adversarial.py), median of 3. A benchmark, not a test: its numbers go in
app/BENCHMARKS.md with the machine they ran on.
"""

import argparse
import json
import platform
import statistics
import sys
import time

from app.phi import detect
from tests.phi.adversarial import UNITS, shape
from tests.phi.corpus import generate


def seconds(text: str, repeat: int = 3) -> float:
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        detect(text)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=100_000)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    corpus = [doc.text for doc in generate()]
    chars = sum(len(t) for t in corpus)
    start = time.perf_counter()
    for text in corpus:
        detect(text)
    ordinary = time.perf_counter() - start
    worst = {name: seconds(shape(unit, args.length)) for name, unit in UNITS.items()}
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "ordinary_chars": chars,
        "ordinary_s": round(ordinary, 3),
        "ordinary_chars_per_s": round(chars / ordinary),
        "adversarial_length": args.length,
        "adversarial_s": {k: round(v, 3) for k, v in sorted(worst.items(), key=lambda i: -i[1])},
    }
    worst_name = max(worst, key=lambda k: worst[k])
    result["worst"] = {"shape": worst_name, "s": round(worst[worst_name], 3),
                       "chars_per_s": round(args.length / worst[worst_name])}  # fmt: skip
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
