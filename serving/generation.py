"""One request seen from the asyncio side: engine tokens in, text deltas out.

Detokenizes incrementally (a delta is released only once its bytes form whole characters),
applies stop sequences (holding back text that could be the start of one), and aborts the
engine request when the consumer goes away or a stop sequence ends it early.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from serving.engine import Engine, Request
from serving.loader import TextTokenizer
from serving.sampling import SamplingParams


class GenerationError(RuntimeError):
    pass


class Generation:
    def __init__(
        self,
        engine: Engine,
        tokenizer: TextTokenizer,
        prompt_ids: list[int],
        params: SamplingParams,
        stop: list[str],
    ) -> None:
        self.engine, self.tokenizer, self.stop = engine, tokenizer, stop
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[tuple[str, int | str | None]] = asyncio.Queue()
        self.request = Request(prompt_ids, params, self._emit)
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None

    def _emit(self, kind: str, value: int | str | None) -> None:  # engine thread
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (kind, value))

    def start(self) -> None:
        """Submit to the engine; raises engine.QueueFull / engine.EngineDead."""
        self.engine.submit(self.request)

    def abort(self) -> None:
        self.engine.abort(self.request)

    async def deltas(self) -> AsyncIterator[str]:
        ids: list[int] = []
        prefix = read = 0  # ids[prefix:read] were decoded into text already emitted/held
        text, sent = "", 0
        longest_stop = max((len(s) for s in self.stop), default=0)
        try:
            while True:
                kind, value = await self.queue.get()
                if kind == "error":
                    self.finish_reason = "error"
                    raise GenerationError(str(value))
                if kind == "finish":
                    self.finish_reason = str(value)
                    if read < len(ids):  # bytes still held back: emit them as they are
                        before = self.tokenizer.decode(ids[prefix:read])
                        text += self.tokenizer.decode(ids[prefix:])[len(before) :]
                    if sent < len(text):
                        yield text[sent:]
                    return
                assert isinstance(value, int)
                ids.append(value)
                self.completion_tokens += 1
                before = self.tokenizer.decode(ids[prefix:read])
                after = self.tokenizer.decode(ids[prefix:])
                if len(after) <= len(before) or after.endswith("\ufffd"):
                    continue  # an incomplete UTF-8 sequence: wait for the next token
                text += after[len(before) :]
                prefix, read = read, len(ids)
                if self.stop:
                    start = max(0, sent - longest_stop)
                    hits = [i for i in (text.find(s, start) for s in self.stop) if i >= 0]
                    if hits:
                        cut = min(hits)
                        self.finish_reason = "stop"
                        self.abort()
                        if cut > sent:
                            yield text[sent:cut]
                        return
                safe = len(text) - _held_back(text, self.stop)
                if safe > sent:
                    yield text[sent:safe]
                    sent = safe
        finally:
            if self.finish_reason is None:  # consumer went away (disconnect, cancel)
                self.abort()


def _held_back(text: str, stops: list[str]) -> int:
    """Length of the longest tail of text that is a proper prefix of a stop sequence."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:k]):
                best = k
                break
    return best
