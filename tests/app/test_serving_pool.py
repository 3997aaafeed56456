"""The app balances over every gpu host: two real `clinchat-serve` processes.

What each host served is read from its own /metrics (`vllm:request_success`),
so the tests see where requests really went, not what the pool believes. One
host is stopped and started again on its port to show a dead host skipped and
taken back.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from app import serving_pool, vault_keys
from app.chat import llm
from app.errors import DependencyUnavailable
from app.kb.embed import ServingEmbedder
from app.routers import health
from app.settings import Settings
from tests.services.postgres import free_port
from tests.services.stack import PrivateServing

QUESTION = [{"role": "user", "content": "Which dose?"}]


TOKEN = secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def second_host(serving: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateServing]:
    """A second model server beside the session's (the same tiny model, another port),
    which wants the bearer token (the session's takes any)."""
    host = PrivateServing(root=Path(tmp_path_factory.mktemp("second-gpu")), api_key=TOKEN)
    host.start()
    yield host
    host.stop()


@pytest.fixture
def two_hosts(
    base_settings: Settings, serving: str, second_host: PrivateServing
) -> Iterator[Settings]:
    """Settings naming both hosts, with a fresh pool (no counts or pauses from other tests)."""
    serving_pool._pools.clear()
    yield base_settings.model_copy(
        update={"serving_url": f"{serving},{second_host.url}", "serving_token": SecretStr(TOKEN)}
    )
    serving_pool._pools.clear()


def served(url: str) -> float:
    """Requests a host has finished, from its own /metrics."""
    text = httpx.get(url.removesuffix("/v1") + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if re.match(r"^vllm:request_success_total(\{|\s)", line)
    )


def counts(settings: Settings) -> list[float]:
    return [served(url) for url in serving_pool.serving_urls(settings)]


async def answer(settings: Settings) -> None:
    stream = await llm.open_stream(settings, QUESTION, max_tokens=4)
    try:
        async for _ in stream.deltas():
            pass
    finally:
        await stream.aclose()


def test_sequential_answers_spread_over_both_hosts(two_hosts: Settings) -> None:
    before = counts(two_hosts)
    for _ in range(4):
        asyncio.run(answer(two_hosts))
    after = counts(two_hosts)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 2]


def test_a_busy_host_is_passed_over_for_the_idle_one(two_hosts: Settings) -> None:
    """Least outstanding, not round robin: while one answer streams from a host, the
    next answers all go to the other."""

    async def scenario() -> str:
        held = await llm.open_stream(two_hosts, QUESTION, max_tokens=4)
        try:
            for _ in range(3):
                await answer(two_hosts)
            async for _ in held.deltas():
                pass
        finally:
            await held.aclose()
        return held.held.upstream.url

    before = counts(two_hosts)
    busy = asyncio.run(scenario())
    after = counts(two_hosts)
    gained = {
        url: a - b
        for url, a, b in zip(serving_pool.serving_urls(two_hosts), after, before, strict=True)
    }
    idle = next(url for url in gained if url != busy)
    assert gained == {busy: 1, idle: 3}
    assert all(u.outstanding == 0 for u in serving_pool.pool_for(two_hosts).upstreams)


def test_a_dead_host_is_skipped_then_taken_back(
    two_hosts: Settings, serving: str, second_host: PrivateServing, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_pool, "FIRST_PAUSE_S", 8.0)  # longer than the four answers
    second_host.stop()
    try:
        before = served(serving)
        for _ in range(4):
            asyncio.run(answer(two_hosts))  # no answer is lost to the dead host
        assert served(serving) - before == 4
        dead = serving_pool.pool_for(two_hosts).upstreams[1]
        # tried once, then paused: the other requests never went near it
        assert dead.failures == 1 and dead.paused(time.monotonic())
    finally:
        second_host.start()
    # once its pause ends, the next request first asks its /health, and it rejoins
    time.sleep(max(0.0, dead.paused_until - time.monotonic()) + 0.1)
    before_both = counts(two_hosts)
    for _ in range(2):
        asyncio.run(answer(two_hosts))
    assert [a - b for a, b in zip(counts(two_hosts), before_both, strict=True)] == [1, 1]
    assert dead.failures == 0


def test_a_host_still_down_after_its_pause_stays_out_longer(
    base_settings: Settings, serving: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serving_pool, "FIRST_PAUSE_S", 0.5)
    serving_pool._pools.clear()
    closed = f"http://127.0.0.1:{free_port()}/v1"
    settings = base_settings.model_copy(update={"serving_url": f"{closed},{serving}"})
    asyncio.run(answer(settings))  # the rotation puts the closed port first for the answer
    dead = serving_pool.pool_for(settings).upstreams[0]
    assert dead.failures == 1
    time.sleep(max(0.0, dead.paused_until - time.monotonic()) + 0.1)
    started = time.monotonic()
    asyncio.run(answer(settings))  # its pause ended: the health check fails, the pause doubles
    assert dead.failures == 2
    assert dead.paused_until >= started + 2 * 0.5
    serving_pool._pools.clear()


def test_every_host_down_is_503_naming_the_serving(base_settings: Settings) -> None:
    serving_pool._pools.clear()
    closed = ",".join(f"http://127.0.0.1:{free_port()}/v1" for _ in range(2))
    settings = base_settings.model_copy(update={"serving_url": closed})
    with pytest.raises(DependencyUnavailable) as caught:
        asyncio.run(answer(settings))
    assert caught.value.name == "serving"
    # both paused now: the next request is refused without waiting on a connection
    with pytest.raises(DependencyUnavailable, match="serving is unavailable"):
        asyncio.run(ServingEmbedder(settings).embed(["hand hygiene"]))
    serving_pool._pools.clear()


def test_embeddings_come_from_the_host_that_is_up(base_settings: Settings, serving: str) -> None:
    serving_pool._pools.clear()
    closed = f"http://127.0.0.1:{free_port()}/v1"
    settings = base_settings.model_copy(update={"serving_url": f"{closed},{serving}"})
    for _ in range(2):  # whichever host the rotation starts with
        vectors = asyncio.run(ServingEmbedder(settings).embed(["hand hygiene", "sepsis"]))
        assert len(vectors) == 2 and all(len(v) == 384 for v in vectors)
    serving_pool._pools.clear()


def test_readiness_needs_one_host_of_several(base_settings: Settings, serving: str) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    one_up = base_settings.model_copy(update={"serving_url": f"{closed},{serving}"})
    asyncio.run(health._serving(one_up))  # raises when not ready
    none_up = base_settings.model_copy(update={"serving_url": f"{closed},{closed}"})
    with pytest.raises(health.NotReady, match="no serving host answers: ConnectError"):
        asyncio.run(health._serving(none_up))


def test_the_token_comes_from_vault(
    base_settings: Settings, second_host: PrivateServing, openbao: Any
) -> None:
    """Deployed, the app holds no serving token: it reads it from Vault's KV store."""
    serving_pool._pools.clear()
    from_vault = base_settings.model_copy(
        update={
            "serving_url": second_host.url,
            "serving_token": SecretStr(""),
            "secrets_in_vault": True,
        }
    )
    try:
        openbao.put_app_secrets({"serving_token": TOKEN})
        vault_keys._secret_readers.clear()
        asyncio.run(answer(from_vault))
        asyncio.run(health._serving(from_vault))

        openbao.put_app_secrets({"serving_token": "not-the-token"})
        vault_keys._secret_readers.clear()
        llm._model_info.clear()
        with pytest.raises(DependencyUnavailable) as refused:
            asyncio.run(answer(from_vault))
        assert refused.value.name == "serving"  # the host answered 401

        openbao.put_app_secrets({})
        vault_keys._secret_readers.clear()
        with pytest.raises(DependencyUnavailable) as missing:
            asyncio.run(answer(from_vault))
        assert missing.value.name == "vault"
        assert TOKEN not in str(missing.value)
    finally:
        openbao.put_app_secrets({})
        vault_keys._secret_readers.clear()
        serving_pool._pools.clear()
