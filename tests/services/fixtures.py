"""Session fixtures for the real services, each private on loopback.

A test suite's conftest.py imports them::

    from tests.services.fixtures import *  # noqa: F403

- ``pki``: a throwaway CA and server certificate for 127.0.0.1/localhost (a
  conftest that defines its own ``pki`` after the import replaces this one, and
  the services then use that);
- ``redis_server``: a :class:`PrivateRedis` (``url``, ``ca_cert``);
- ``openbao``: a :class:`PrivateOpenBao` (``addr``, ``ca_cert``, ``root_token``,
  ``role_id``, ``secret_id``);
- ``ldap_server``: a :class:`PrivateLdap` (``url``, ``base_dn``, ``bind_dn``,
  ``bind_password``, ``users``, ``ca_cert``).

Each starts once per session, says on the terminal how long it took, and at
the end of the session is stopped and its directory removed. The directories
are under /tmp, not pytest's tmp dir: that one is private to root, and Redis and
slapd run as their own system users when the tests run as root.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.ldap import PrivateLdap
from tests.services.openbao import PrivateOpenBao
from tests.services.pki import TestPki, make_pki
from tests.services.redis import PrivateRedis

__all__ = ["STARTUP_S", "ldap_server", "openbao", "pki", "redis_server"]

# service -> seconds its fixture took to start (this session)
STARTUP_S: dict[str, float] = {}


def report_startup(config: pytest.Config, name: str, started: float) -> None:
    seconds = time.monotonic() - started
    STARTUP_S[name] = seconds
    line = f"[services] {name} started in {seconds:.2f} s"
    capture = config.pluginmanager.get_plugin("capturemanager")
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if capture is None or reporter is None:
        print(line)
        return
    with capture.global_and_fixture_disabled():
        if reporter._tw.width_of_current_line:  # after a test's "." (with -q)
            reporter.write("\n")
        reporter.write_line(line)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> TestPki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def redis_server(pki: TestPki, pytestconfig: pytest.Config) -> Iterator[PrivateRedis]:
    root = Path(tempfile.mkdtemp(prefix="clinchat-redis-"))
    server = PrivateRedis(root=root, pki=pki)
    try:
        started = time.monotonic()
        server.start()
        report_startup(pytestconfig, "redis", started)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def openbao(pki: TestPki, pytestconfig: pytest.Config) -> Iterator[PrivateOpenBao]:
    root = Path(tempfile.mkdtemp(prefix="clinchat-openbao-"))
    server = PrivateOpenBao(root=root, pki=pki)
    try:
        started = time.monotonic()
        server.start()
        report_startup(pytestconfig, "openbao", started)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def ldap_server(pki: TestPki, pytestconfig: pytest.Config) -> Iterator[PrivateLdap]:
    root = Path(tempfile.mkdtemp(prefix="clinchat-ldap-"))
    server = PrivateLdap(root=root, pki=pki)
    try:
        started = time.monotonic()
        server.start()
        report_startup(pytestconfig, "ldap", started)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
