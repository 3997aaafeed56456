"""The server through the official openai client: chat, streaming, stops, seeds, limits."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from tests.serving.conftest import MODEL, RunningServer

MSG = [{"role": "user", "content": "Hello! What can you tell me about the library?"}]


def test_models(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == MODEL


def test_chat(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=8, temperature=0)
    choice = out.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content
    assert choice.finish_reason == "length"
    assert out.usage is not None and out.usage.completion_tokens == 8
    assert out.usage.total_tokens == out.usage.prompt_tokens + 8


def test_tokenize_counts_the_prompt_the_chat_would_run(
    server: RunningServer, client: openai.OpenAI
) -> None:
    r = httpx.post(server.url + "/v1/tokenize", json={"model": MODEL, "messages": MSG})
    assert r.status_code == 200, r.text
    out = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=1)
    assert out.usage is not None and r.json()["count"] == out.usage.prompt_tokens
    assert r.json()["max_model_len"] == client.models.list().data[0].model_extra["max_model_len"]
    wrong = httpx.post(server.url + "/v1/tokenize", json={"model": "nope", "messages": MSG})
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "model_not_found"
    empty = httpx.post(server.url + "/v1/tokenize", json={"model": MODEL, "messages": []})
    assert empty.status_code == 400


def test_stream_with_usage_matches_non_stream(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=MSG, max_tokens=12, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=MSG,
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals and finals[-1].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_ends_with_done(server: RunningServer) -> None:
    body = {"model": MODEL, "prompt": "The weather", "max_tokens": 3, "stream": True}
    with httpx.stream("POST", server.url + "/v1/completions", json=body) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data:")]
    assert lines[-1].strip() == "data: [DONE]"


def test_max_tokens(client: openai.OpenAI) -> None:
    out = client.completions.create(
        model=MODEL, prompt="Numbers: one two", max_tokens=5, temperature=0
    )
    assert out.usage is not None and out.usage.completion_tokens == 5
    assert out.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequence(client: openai.OpenAI, stream: bool) -> None:
    prompt = "Colors: red orange yellow"
    full = (
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=30, temperature=0)
        .choices[0]
        .text
    )
    # A stop string taken from the model's own greedy output, past its first characters.
    start = next(
        i
        for i in range(3, len(full) - 3)
        if "\ufffd" not in full[i : i + 2] and full[i : i + 2] not in full[:i]
    )
    stop = full[start : start + 2]
    kwargs = {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": 30,
        "temperature": 0,
        "stop": [stop, "never-appears-xyz"],
    }
    if stream:
        chunks = list(client.completions.create(stream=True, **kwargs))
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        out = client.completions.create(**kwargs)
        text, finish = out.choices[0].text, out.choices[0].finish_reason
    assert text == full[: full.index(stop)]
    assert finish == "stop"


def test_seed_gives_same_text(client: openai.OpenAI) -> None:
    def run(seed: int) -> str:
        out = client.chat.completions.create(
            model=MODEL, messages=MSG, max_tokens=16, temperature=1.0, top_p=0.95, seed=seed
        )
        return out.choices[0].message.content or ""

    first = run(1234)
    assert run(1234) == first
    assert any(run(s) != first for s in (1, 2, 3))


def test_429_when_queue_full(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_num_seqs=1, max_queue=1)
    client = srv.client()
    srv.engine.pause()
    results: list[object] = []

    def call() -> None:
        results.append(client.completions.create(model=MODEL, prompt="Hello", max_tokens=4))

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while srv.engine.num_waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(openai.RateLimitError) as err:
        client.completions.create(model=MODEL, prompt="Hello", max_tokens=4)
    assert err.value.status_code == 429
    assert err.value.body["type"] == "rate_limit_exceeded"  # type: ignore[index]
    srv.engine.resume()
    for t in threads:
        t.join(timeout=30)
    assert len(results) == 2


def test_disconnected_stream_frees_slot(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_num_seqs=2)
    engine = srv.engine
    real_run = engine.runner.run

    def slow_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.02)  # 200 tokens would take 4 s
        return real_run(*args, **kwargs)

    engine.runner.run = slow_run
    engine.eos_ids = set()  # the random model must not end the request early
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 200, "stream": True}
    with httpx.stream("POST", srv.url + "/v1/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            if line.startswith("data:"):
                break
        assert engine.num_running == 1
    t0 = time.monotonic()
    while engine.num_running and time.monotonic() - t0 < 2:
        time.sleep(0.01)
    assert engine.num_running == 0
    assert engine.cache.num_free == 2
    metrics = httpx.get(srv.url + "/metrics").text
    assert (
        'vllm:request_success_total{finished_reason="abort",model_name="tiny-llama"} 1.0' in metrics
    )


def test_disconnected_request_frees_slot(make_server) -> None:  # type: ignore[no-untyped-def]
    srv: RunningServer = make_server(max_num_seqs=2)
    engine = srv.engine
    real_run = engine.runner.run

    def slow_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(0.02)  # 200 tokens would take 4 s
        return real_run(*args, **kwargs)

    engine.runner.run = slow_run
    engine.eos_ids = set()  # the random model must not end the request early
    body = {"model": MODEL, "prompt": "Hello", "max_tokens": 200}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(srv.url + "/v1/completions", json=body, timeout=0.5)
    t0 = time.monotonic()
    while engine.num_running and time.monotonic() - t0 < 2:
        time.sleep(0.01)
    assert engine.num_running == 0 and engine.cache.num_free == 2
    metrics = httpx.get(srv.url + "/metrics").text
    assert (
        'vllm:request_success_total{finished_reason="abort",model_name="tiny-llama"} 1.0' in metrics
    )


def test_health_503_until_loaded_then_200_then_503_when_engine_dies(make_server) -> None:  # type: ignore[no-untyped-def]
    from serving.api import default_loader

    gate = threading.Event()

    def gated(*args, **kwargs):  # type: ignore[no-untyped-def]
        gate.wait(30)
        return default_loader(*args, **kwargs)

    srv: RunningServer = make_server(loader=gated, wait_ready=False)
    r = httpx.get(srv.url + "/health")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = httpx.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_ready"
    gate.set()
    srv.wait_ready()
    assert httpx.get(srv.url + "/health").status_code == 200

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("simulated CUDA error")

    srv.engine.model.forward = broken
    r = httpx.post(
        srv.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2}
    )
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    r = httpx.get(srv.url + "/health")
    assert r.status_code == 503 and r.json()["status"] == "engine dead"
    r = httpx.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "Hi"})
    assert r.status_code == 503


def test_bearer_auth(make_server, caplog) -> None:  # type: ignore[no-untyped-def]
    token = "s3cret-token-value-000"  # noqa: S105
    srv: RunningServer = make_server(api_key=token)
    with pytest.raises(openai.AuthenticationError) as err:
        srv.client("wrong").models.list()
    assert err.value.body["code"] == "invalid_api_key"  # type: ignore[index]
    r = httpx.get(srv.url + "/v1/models")
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert srv.client(token).models.list().data[0].id == MODEL
    assert httpx.get(srv.url + "/health").status_code == 200
    assert token not in caplog.text


def test_metrics(server: RunningServer, client: openai.OpenAI) -> None:
    secret = "Zebra-quasar-4711 note"
    client.completions.create(model=MODEL, prompt=secret, max_tokens=3)
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:time_per_output_token_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prompt_tokens_total",
        "vllm:generation_tokens_total",
        "clinchat:gpu_memory_used_bytes",
    ):
        assert name in text, name
    assert secret not in text and "Zebra" not in text


def test_no_prompt_text_in_logs(
    server: RunningServer, client: openai.OpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    caplog.set_level(logging.DEBUG)
    secret = "Walrus-nebula-9931"
    client.chat.completions.create(
        model=MODEL, max_tokens=2, messages=[{"role": "user", "content": secret}]
    )
    r = httpx.post(
        server.url + "/v1/chat/completions",
        json={"model": MODEL, "temperature": 7, "messages": [{"role": "user", "content": secret}]},
    )
    assert r.status_code == 400 and secret not in r.text
    assert secret not in caplog.text
