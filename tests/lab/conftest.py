"""Markers of the lab tests (registered here, with the tests they mark)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lab: boots real lab hosts with tests/lab/clinchat-lab (root, seconds)"
    )
    config.addinivalue_line(
        "markers", "qemu: boots a qemu VM under TCG (a minute or two); deselect with -m 'not qemu'"
    )
