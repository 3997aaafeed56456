"""Inputs that make a careless regular expression backtrack: long runs of one
character, or of a short unit, that almost match (shared by the growth test and the
benchmark)."""

import importlib
import re

MODULES = ("patterns", "dates", "geo", "names", "logging")

UNITS = {
    "spaces": " ",
    "newlines": "\n",
    "dashes": "-",
    "letters": "a",
    "digits": "1",
    "dotted": "a.",
    "dotted digits": "1.",
    "digit dash": "1-",
    "slashes": "1/",
    "at signs": "a@",
    "colons": "a:",
    "capitalised words": "Ab ",
    "title and initial": "Mr. A ",
    "name and comma": "Smith, ",
    "words": "word ",
}


def shape(unit: str, length: int) -> str:
    return (unit * (length // len(unit) + 1))[:length]


def compiled_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """Every compiled pattern at module level in app.phi (lists of them included)."""
    found = []
    for name in MODULES:
        module = importlib.import_module(f"app.phi.{name}")
        for attr, value in vars(module).items():
            values = value if isinstance(value, list | tuple) else [value]
            for i, item in enumerate(values):
                if isinstance(item, re.Pattern):
                    label = f"{name}.{attr}" + (f"[{i}]" if values is value else "")
                    found.append((label, item))
    return found
