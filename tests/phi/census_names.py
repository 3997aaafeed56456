"""How ``app/phi/data/census_surnames.txt`` and ``census_first_names.txt`` were made.

    python -m tests.phi.census_names NAMES_DIR DICT_FILE

- NAMES_DIR: the US Census Bureau's 1990 name frequency files (``dist.all.last``,
  ``dist.female.first``, ``dist.male.first``; public domain, a work of the US
  government), as shipped in the PyPI sdist ``names`` 0.3.0 (``names/`` inside it).
- DICT_FILE: Debian's ``wamerican-large`` word list
  (``/usr/share/dict/american-english-large``, 2020.12.07-2).

A census name that is also a lower-case English word (``white``, ``hill``, ``rose``) is
left out: those stay with the hand-written lists and their cue rules
(``ambiguous_names.txt``), so a bigger list cannot turn ordinary words into names. Names
shorter than three letters are left out too (``ng``, ``le``: also clinical shorthand).
Only the resulting names are written, lower case, in the census's frequency order.
"""

import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "app" / "phi" / "data"
HEADER = (
    "# {what} from the US Census Bureau's 1990 name frequency files (public domain),\n"
    "# less every lower-case English word and every name under three letters: see\n"
    "# tests/phi/census_names.py. One name per line, lower case.\n"
)


def words(dict_file: Path) -> set[str]:
    lines = dict_file.read_text(encoding="utf-8", errors="ignore").splitlines()
    return {w.lower().removesuffix("'s") for w in lines if w[:1].islower()}


def names(path: Path) -> list[str]:
    return [line.split()[0].lower() for line in path.read_text().splitlines() if line.strip()]


def main(names_dir: str, dict_file: str) -> int:
    english = words(Path(dict_file))

    def keep(name: str) -> bool:
        return len(name) >= 3 and name.isalpha() and name not in english

    root = Path(names_dir)
    surnames = [n for n in names(root / "dist.all.last") if keep(n)]
    first: list[str] = []
    for file in ("dist.female.first", "dist.male.first"):
        first += [n for n in names(root / file) if keep(n) and n not in first]
    for file, what, values in (
        ("census_surnames.txt", "Surnames", surnames),
        ("census_first_names.txt", "Given names", first),
    ):
        (DATA / file).write_text(HEADER.format(what=what) + "\n".join(values) + "\n")
        print(f"{file}: {len(values)} names")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
