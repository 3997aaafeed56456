"""The prompt: a system message with numbered sources, a few turns of history, the question.

The model is told to answer only from the numbered sources and to cite them as
[1], [2]; each source is headed with its title, version, section and page, so
the model can say where a statement comes from. The prompt has a character
budget, which the chat service fits to the model's context minus the answer's
tokens by having the serving count the draft (/tokenize): sources that do not
fit are left out, the oldest history first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from app.kb.retrieve import Hit

SYSTEM_PROMPT = (
    "You are ClinChat, an assistant for hospital clinicians. Answer the question using only "
    "the numbered sources below, which are extracts from the hospital's own documents. "
    "Cite every statement with the number of its source in square brackets, like [1] or [2]. "
    "If the sources do not answer the question, say that you cannot find the answer in the "
    "hospital's documents; do not use outside knowledge and do not guess. Be concise."
)

NOT_FOUND = (
    "I could not find this in the hospital's documents. Try rephrasing the question, or "
    "check with a senior colleague or the relevant department."
)

HISTORY_TURNS = 6  # the last three exchanges: enough for follow-up questions
HISTORY_TURN_CHARS = 1000  # an old answer is context, not a source: keep it short
MIN_SOURCE_CHARS = 200  # a source cut shorter than this is left out instead


@dataclass(frozen=True)
class Turn:
    role: Literal["user", "assistant"]
    content: str


def source_heading(number: int, hit: Hit) -> str:
    """``[1] Sepsis guideline (version 2), section Antibiotics, page 3``."""
    parts = [f"[{number}] {hit.title} (version {hit.version})"]
    if hit.section:
        parts.append(f"section {hit.section}")
    if hit.page is not None:
        parts.append(f"page {hit.page}")
    return ", ".join(parts)


def _sources_block(hits: Sequence[Hit], budget: int) -> tuple[str, int]:
    """The numbered sources that fit in ``budget`` characters, and how many did."""
    blocks: list[str] = []
    used = 0
    for number, hit in enumerate(hits, start=1):
        heading = source_heading(number, hit)
        room = budget - used - len(heading) - 2
        if room < MIN_SOURCE_CHARS:
            break
        block = f"{heading}\n{hit.text[:room]}"
        blocks.append(block)
        used += len(block) + 2
    return "\n\n".join(blocks), len(blocks)


def build_messages(
    question: str,
    hits: Sequence[Hit],
    history: Sequence[Turn] = (),
    max_chars: int | None = None,
) -> tuple[list[dict[str, str]], int]:
    """Chat messages for the model, and how many of ``hits`` made it into the prompt.

    ``max_chars`` bounds the whole prompt; the question is always kept, then the
    sources (the best first), then as much recent history as still fits.
    """
    recent = [Turn(t.role, t.content[:HISTORY_TURN_CHARS]) for t in history[-HISTORY_TURNS:]]
    budget = max_chars if max_chars is not None else 1 << 30
    fixed = len(SYSTEM_PROMPT) + len(question) + 64
    sources, used = _sources_block(hits, budget - fixed)
    room = budget - fixed - len(sources)
    kept: list[Turn] = []
    for turn in reversed(recent):  # the newest turns matter most for a follow-up
        if len(turn.content) > room:
            break
        kept.insert(0, turn)
        room -= len(turn.content)
    system = f"{SYSTEM_PROMPT}\n\nSources:\n\n{sources}"
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.content} for t in kept]
    messages.append({"role": "user", "content": question})
    return messages, used
