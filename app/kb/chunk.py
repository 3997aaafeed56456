"""Chunk parsed blocks along the document's structure.

A chunk never spans two pages or two sections (a section is a run of blocks under
the same heading path), so every citation points at one place. Long sections are
split at paragraph boundaries, then sentence boundaries, then words, into chunks of
at most ``max_chars``; consecutive chunks of one section share a short overlap so a
fact cut at the boundary is still whole in one of them.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from app.kb.parse import Block

SECTION_SEPARATOR = " > "
_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+")


@dataclass(frozen=True)
class TextChunk:
    text: str
    section: str  # heading path, "Sepsis > Antibiotics"
    page: int | None

    def embedding_input(self) -> str:
        """What is embedded: the heading path gives a short chunk its context."""
        return f"{self.section}\n{self.text}" if self.section else self.text


def default_overlap(max_chars: int) -> int:
    return min(200, max_chars // 8)


def chunk_blocks(
    blocks: Iterable[Block], max_chars: int, overlap_chars: int | None = None
) -> list[TextChunk]:
    overlap = default_overlap(max_chars) if overlap_chars is None else overlap_chars
    chunks: list[TextChunk] = []
    for (headings, page), group in itertools.groupby(blocks, key=lambda b: (b.headings, b.page)):
        section = SECTION_SEPARATOR.join(headings)
        units = _units([block.text for block in group], max_chars)
        chunks.extend(TextChunk(text, section, page) for text in _pack(units, max_chars, overlap))
    return chunks


def _units(paragraphs: list[str], max_chars: int) -> list[tuple[str, str]]:
    """(separator before it, text) pieces of at most ``max_chars`` each."""
    units: list[tuple[str, str]] = []
    for paragraph in paragraphs:
        if len(paragraph) <= max_chars:
            units.append(("\n\n", paragraph))
            continue
        separator = "\n\n"
        for sentence in _SENTENCE_END.split(paragraph):
            for piece in _split_words(sentence, max_chars):
                units.append((separator, piece))
                separator = " "
    return units


def _split_words(text: str, max_chars: int) -> list[str]:
    if len(text) <= max_chars:
        return [text] if text else []
    pieces: list[str] = []
    current = ""
    for word in text.split():
        while len(word) > max_chars:  # one "word" longer than a chunk: cut it
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            pieces.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        pieces.append(current)
    return pieces


def _tail(text: str, limit: int) -> str:
    """At most ``limit`` characters from the end of ``text``, starting at a sentence or word."""
    if limit <= 0 or len(text) <= limit:
        return ""
    window = text[-limit:]
    sentence = _SENTENCE_END.search(window)
    if sentence:
        return window[sentence.end() :].strip()
    space = window.find(" ")
    return window[space + 1 :].strip() if space >= 0 else ""


def _pack(units: list[tuple[str, str]], max_chars: int, overlap: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    for separator, text in units:
        if not current:
            current = text
        elif len(current) + len(separator) + len(text) <= max_chars:
            current = current + separator + text
        else:
            chunks.append(current)
            tail = _tail(current, overlap)
            fits = tail and len(tail) + 1 + len(text) <= max_chars
            current = f"{tail} {text}" if fits else text
    if current:
        chunks.append(current)
    return chunks
