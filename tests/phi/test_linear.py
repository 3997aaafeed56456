"""No pattern of the detector backtracks super-linearly (issue 12: the URL pattern took
seconds on 8,000 characters anyone can send in a chat question).

Every compiled pattern in app.phi is run over 100 kB of each adversarial shape and over
a quarter of it. Linear work grows 4 times, quadratic 16 times: the test asserts the
growth, not a speed (app/BENCHMARKS.md has the speeds)."""

import time

import pytest

from tests.phi.adversarial import UNITS, compiled_patterns, shape

FULL = 100_000


def _seconds(pattern, text: str) -> float:  # noqa: ANN001
    start = time.perf_counter()
    for _ in pattern.finditer(text):
        pass
    return time.perf_counter() - start


def test_the_scan_finds_the_patterns() -> None:
    labels = {label for label, _ in compiled_patterns()}
    assert len(labels) > 40
    assert {"patterns._DOTTED_RE", "geo._AGE_AFTER_NAME_RE", "names._ROLE_CUE_RE"} <= labels


@pytest.mark.parametrize("unit_name", sorted(UNITS))
def test_every_pattern_is_linear_on_adversarial_input(unit_name: str) -> None:
    quarter, full = shape(UNITS[unit_name], FULL // 4), shape(UNITS[unit_name], FULL)
    slow = []
    for label, pattern in compiled_patterns():
        small = _seconds(pattern, quarter)
        if small < 0.002:  # too fast to compare; the full text must then stay fast
            small = 0.002
        big = _seconds(pattern, full)
        if big > 10 * small:
            slow.append(f"{label}: {small:.4f} s -> {big:.4f} s")
    assert not slow, slow
