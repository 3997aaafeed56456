"""The comparisons of clinchat.appliance.probe: is the observed value what is expected?"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any


class ComparisonError(ValueError):
    """The two values cannot be compared this way (a wrong type, not a drift)."""


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise ComparisonError(f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ComparisonError(f"{value!r} is not a number") from exc


def _same(a: Any, b: Any) -> bool:
    """Equal; "900" and 900 are equal (command output against a number)."""
    if isinstance(a, (int, float, str)) and isinstance(b, (int, float, str)):
        if not isinstance(a, bool) and not isinstance(b, bool):
            try:
                return float(a) == float(b)
            except ValueError:
                pass
    return bool(a == b)


def _collection(value: Any) -> list[Any] | str | dict[Any, Any]:
    if isinstance(value, (list, tuple, set)):
        return list(value)
    if isinstance(value, (str, dict)):
        return value
    raise ComparisonError(f"{value!r} is not a list, a string or a mapping")


def _contains(container: Any, item: Any) -> bool:
    container = _collection(container)
    if isinstance(container, str):
        return str(item) in container
    return any(_same(x, item) for x in container)


def _regex(observed: Any, pattern: Any) -> bool:
    try:
        return re.search(str(pattern), str(observed)) is not None
    except re.error as exc:
        raise ComparisonError(f"bad regular expression {pattern!r}: {exc}") from exc


COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": _same,
    "ne": lambda o, e: not _same(o, e),
    "lt": lambda o, e: _number(o) < _number(e),
    "le": lambda o, e: _number(o) <= _number(e),
    "gt": lambda o, e: _number(o) > _number(e),
    "ge": lambda o, e: _number(o) >= _number(e),
    # observed is one of expected
    "in": lambda o, e: _contains(e, o),
    "not_in": lambda o, e: not _contains(e, o),
    # observed (a list, string or mapping) holds expected
    "contains": _contains,
    "not_contains": lambda o, e: not _contains(o, e),
    "regex": _regex,
    "not_regex": lambda o, e: not _regex(o, e),
    # every item of observed is allowed by expected / observed has every item of expected
    "subset": lambda o, e: all(_contains(e, x) for x in _collection(o)),
    "superset": lambda o, e: all(_contains(o, x) for x in _collection(e)),
}


def compare(observed: Any, expected: Any, comparison: str) -> bool:
    """True when compliant; ComparisonError when the values cannot be compared so."""
    if comparison not in COMPARISONS:
        raise ComparisonError(f"unknown comparison {comparison!r}: one of {', '.join(COMPARISONS)}")
    return COMPARISONS[comparison](observed, expected)
