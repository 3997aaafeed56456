"""Hybrid retrieval: vector search and full-text search, fused by reciprocal rank.

Both halves search only ``searchable`` chunks (the live version of active
documents) and return about 4k candidates each:

- vector: cosine distance on the HNSW index (``hnsw.ef_search`` at least 2x the
  candidates; iterative scan, so the ``searchable`` filter cannot starve it);
- full text: ``websearch_to_tsquery('english', q)`` on the stored tsvector, ranked
  by ``ts_rank_cd``.

Fusion: score = sum over both lists of 1 / (60 + rank). Relevance gate: a chunk
counts only if its cosine similarity reaches ``retrieval_min_similarity`` or it
matched the full-text query; when nothing counts the answer is [] and the chat
says it found nothing, rather than citing something unrelated.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.kb.embed import Embedder, embedder_for
from app.kb.parse import clean
from app.metrics import RETRIEVAL_LATENCY
from app.settings import Settings

RRF_K = 60
CANDIDATES_PER_K = 4
MAX_QUERY_CHARS = 2000


@dataclass(frozen=True)
class Hit:
    chunk_id: int
    document_id: uuid.UUID
    title: str
    version: int
    section: str
    page: int | None
    text: str
    score: float  # the fused reciprocal-rank score
    similarity: float  # cosine similarity of the chunk to the query


@dataclass
class Timings:
    """Seconds spent in each step of one retrieval (the benchmark reports them)."""

    embed_s: float = 0.0
    vector_s: float = 0.0
    fts_s: float = 0.0
    fuse_s: float = 0.0
    total_s: float = 0.0


# relaxed_order may return neighbours slightly out of order: sort them again
VECTOR_SQL = (
    "WITH nearest AS MATERIALIZED ("
    " SELECT id, embedding <=> CAST(:q AS vector) AS distance FROM chunks"
    " WHERE searchable ORDER BY embedding <=> CAST(:q AS vector) LIMIT :n)"
    " SELECT id FROM nearest ORDER BY distance"
)


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


async def vector_candidates(session: AsyncSession, vector: str, n: int) -> list[int]:
    """Chunk ids nearest to ``vector`` (a pgvector literal), nearest first."""
    await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * n))}"))
    await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    rows = await session.execute(text(VECTOR_SQL), {"q": vector, "n": n})
    return [row.id for row in rows]


async def fulltext_candidates(session: AsyncSession, query: str, n: int) -> list[int]:
    """Chunk ids matching the web-search style query, best ``ts_rank_cd`` first."""
    rows = await session.execute(
        text(
            "SELECT c.id FROM chunks c, websearch_to_tsquery('english', :q) AS query"
            " WHERE c.searchable AND c.tsv @@ query"
            " ORDER BY ts_rank_cd(c.tsv, query) DESC, c.id LIMIT :n"
        ),
        {"q": query, "n": n},
    )
    return [row.id for row in rows]


def fuse(*rankings: list[int]) -> dict[int, float]:
    """Reciprocal rank fusion (Cormack et al. 2009) with k = 60."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return scores


async def retrieve(
    session: AsyncSession, settings: Settings, query: str, k: int | None = None
) -> list[Hit]:
    """The ``k`` (default ``retrieval_top_k``) most relevant chunks; [] if none is."""
    hits, _ = await retrieve_timed(session, settings, query, k)
    return hits


async def retrieve_timed(
    session: AsyncSession,
    settings: Settings,
    query: str,
    k: int | None = None,
    embedder: Embedder | None = None,
) -> tuple[list[Hit], Timings]:
    started = time.perf_counter()
    timings = Timings()
    query = clean(query)[:MAX_QUERY_CHARS]
    if not any(ch.isalnum() for ch in query):
        return [], timings
    k = k or settings.retrieval_top_k
    n = CANDIDATES_PER_K * k

    vectors = await (embedder or embedder_for(settings)).embed([query])
    vector = _vector_literal(vectors[0])
    mark = time.perf_counter()
    timings.embed_s = mark - started

    by_vector = await vector_candidates(session, vector, n)
    timings.vector_s = time.perf_counter() - mark
    mark = time.perf_counter()

    by_text = await fulltext_candidates(session, query, n)
    timings.fts_s = time.perf_counter() - mark
    mark = time.perf_counter()

    scores = fuse(by_vector, by_text)
    hits = await _hits(session, vector, scores, set(by_text), settings.retrieval_min_similarity)
    hits = sorted(hits, key=lambda h: (-h.score, -h.similarity, h.chunk_id))[:k]
    timings.fuse_s = time.perf_counter() - mark
    timings.total_s = time.perf_counter() - started
    RETRIEVAL_LATENCY.observe(timings.total_s)
    return hits, timings


async def _hits(
    session: AsyncSession,
    vector: str,
    scores: dict[int, float],
    text_matches: set[int],
    min_similarity: float,
) -> list[Hit]:
    """The candidates' rows, each with its similarity, gated for relevance."""
    if not scores:
        return []
    rows = await session.execute(
        text(
            "SELECT c.id, c.document_id, d.title, v.version, c.section, c.page, c.text,"
            " 1 - (c.embedding <=> CAST(:q AS vector)) AS similarity"
            " FROM chunks c JOIN documents d ON d.id = c.document_id"
            " JOIN document_versions v ON v.id = c.version_id"
            " WHERE c.id = ANY(:ids) AND c.searchable AND d.status = 'active'"
        ),
        {"q": vector, "ids": list(scores)},
    )
    return [
        Hit(
            chunk_id=row.id,
            document_id=row.document_id,
            title=row.title,
            version=row.version,
            section=row.section,
            page=row.page,
            text=row.text,
            score=scores[row.id],
            similarity=float(row.similarity),
        )
        for row in rows
        if row.similarity >= min_similarity or row.id in text_matches
    ]
