"""Hybrid retrieval: vector search and full-text search, fused by reciprocal rank.

Both halves search only ``searchable`` chunks (the live version of active
documents) of the collections the asker reads (app/kb/collections.py; None: all),
and return about 4k candidates each:

- vector: cosine distance on the HNSW index (``hnsw.ef_search`` at least 2x the
  candidates; iterative scan, so the ``searchable`` filter cannot starve it);
- full text: the question's lexemes (English stemming, stop words dropped) OR'd,
  so a chunk matching some of the terms still ranks (requiring every term found
  nothing for most paraphrased questions), ranked by ``ts_rank_cd``. Ranking
  reads every matching row, so a lexeme that PostgreSQL's own statistics (the
  tsvector column's most common elements, kept by ANALYZE) put in more than
  ``COMMON_ROWS`` chunks is left out of the OR; when every lexeme is that common
  the chunks must hold them all (AND), which is selective. Without it an OR
  query ranked all 100,000 chunks of the benchmark: 0.9 s.

Fusion: score = sum over both lists of 1 / (60 + rank). Relevance gate: a chunk
counts only if its cosine similarity reaches ``retrieval_min_similarity`` or it
holds every lexeme of the question (at least two of them); when nothing counts
the answer is [] and the chat says it found nothing, rather than citing
something unrelated. The thresholds are calibrated on evaluation sets the code
was not written against (app/kb/eval.py, app/BENCHMARKS.md).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.kb.embed import Embedder, embedder_for
from app.kb.expand import expand
from app.kb.parse import clean
from app.metrics import RETRIEVAL_LATENCY
from app.settings import Settings

RRF_K = 60
CANDIDATES_PER_K = 4
MAX_QUERY_CHARS = 2000
COMMON_ROWS = 2000  # a lexeme in more chunks than this is too common to OR (see above)
STATISTICS_TTL_S = 300.0  # the column's statistics change only when ANALYZE runs


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
    query_terms: int = 0  # the question's distinct lexemes
    coverage: float = 0.0  # the share of them the chunk (its section and text) holds


@dataclass
class Timings:
    """Seconds spent in each step of one retrieval (the benchmark reports them)."""

    embed_s: float = 0.0
    vector_s: float = 0.0
    fts_s: float = 0.0
    fuse_s: float = 0.0
    total_s: float = 0.0


Collections = frozenset[str] | None  # the readable collections; None: every one


# relaxed_order may return neighbours slightly out of order: sort them again
VECTOR_SQL = (
    "WITH nearest AS MATERIALIZED ("
    " SELECT id, embedding <=> CAST(:q AS vector) AS distance FROM chunks c"
    " WHERE searchable AND (CAST(:every_collection AS boolean)"
    "  OR c.collection = ANY(CAST(:collections AS text[])))"
    " ORDER BY embedding <=> CAST(:q AS vector) LIMIT :n)"
    " SELECT id FROM nearest ORDER BY distance"
)


def collection_params(collections: Collections) -> dict[str, object]:
    """The parameters of each query's condition on the chunk's collection."""
    return {"every_collection": collections is None, "collections": sorted(collections or ())}


def _vector_literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


async def vector_candidates(
    session: AsyncSession, vector: str, n: int, collections: Collections = None
) -> list[int]:
    """Chunk ids nearest to ``vector`` (a pgvector literal), nearest first."""
    await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, 2 * n))}"))
    await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    rows = await session.execute(
        text(VECTOR_SQL), {"q": vector, "n": n, **collection_params(collections)}
    )
    return [row.id for row in rows]


async def query_lexemes(session: AsyncSession, query: str) -> list[str]:
    """The question's distinct lexemes as the stored tsvector has them (stemmed, no stop words)."""
    row = await session.execute(
        text("SELECT tsvector_to_array(to_tsvector('english', :q))"), {"q": query}
    )
    return list(row.scalar_one() or [])


def _quoted(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def any_of(lexemes: list[str]) -> str:
    """A tsquery literal matching a chunk that holds any of ``lexemes`` (already normalised)."""
    return " | ".join(_quoted(lexeme) for lexeme in lexemes)


def all_of(lexemes: list[str]) -> str:
    return " & ".join(_quoted(lexeme) for lexeme in lexemes)


_common: dict[str, tuple[float, frozenset[str]]] = {}


async def common_lexemes(session: AsyncSession, settings: Settings) -> frozenset[str]:
    """Lexemes the planner's statistics put in more than ``COMMON_ROWS`` chunks."""
    key = f"{settings.db_host}:{settings.db_port}/{settings.db_name}"
    cached = _common.get(key)
    if cached and time.monotonic() - cached[0] < STATISTICS_TTL_S:
        return cached[1]
    row = (
        await session.execute(
            text(
                "SELECT CAST(CAST(s.most_common_elems AS text) AS text[]) AS lexemes,"
                " s.most_common_elem_freqs AS freqs, c.reltuples AS chunks"
                " FROM pg_stats s JOIN pg_class c ON c.relname = s.tablename"
                " AND c.relnamespace = to_regnamespace(s.schemaname)"
                " WHERE s.schemaname = current_schema() AND s.tablename = 'chunks'"
                " AND s.attname = 'tsv'"
            )
        )
    ).first()
    common: frozenset[str] = frozenset()
    if row is not None and row.lexemes and row.freqs:
        # the frequencies are of the column's rows; the last three are min, max and nulls
        common = frozenset(
            lexeme
            for lexeme, freq in zip(row.lexemes, row.freqs, strict=False)
            if freq * max(row.chunks, 0) > COMMON_ROWS
        )
    _common[key] = (time.monotonic(), common)
    return common


async def fulltext_candidates(
    session: AsyncSession,
    lexemes: list[str],
    n: int,
    common: frozenset[str] = frozenset(),
    collections: Collections = None,
) -> list[int]:
    """Chunk ids holding any of the uncommon ``lexemes`` (all, if every one is common),
    best ``ts_rank_cd`` first."""
    if not lexemes:
        return []
    rare = [lexeme for lexeme in lexemes if lexeme not in common]
    rows = await session.execute(
        text(
            "SELECT c.id FROM chunks c, CAST(:query AS tsquery) AS query"
            " WHERE c.searchable AND c.tsv @@ query AND (CAST(:every_collection AS boolean)"
            "  OR c.collection = ANY(CAST(:collections AS text[])))"
            " ORDER BY ts_rank_cd(c.tsv, query) DESC, c.id LIMIT :n"
        ),
        {
            "query": any_of(rare) if rare else all_of(lexemes),
            "n": n,
            **collection_params(collections),
        },
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
    session: AsyncSession,
    settings: Settings,
    query: str,
    k: int | None = None,
    collections: Collections = None,
) -> list[Hit]:
    """The ``k`` (default ``retrieval_top_k``) most relevant chunks of ``collections``;
    [] if none is."""
    hits, _ = await retrieve_timed(session, settings, query, k, collections=collections)
    return hits


async def retrieve_timed(
    session: AsyncSession,
    settings: Settings,
    query: str,
    k: int | None = None,
    embedder: Embedder | None = None,
    collections: Collections = None,
) -> tuple[list[Hit], Timings]:
    found, timings = await candidates(session, settings, query, k, embedder, collections)
    started = time.perf_counter()
    hits = gate(found, settings, k)
    timings.fuse_s += time.perf_counter() - started
    timings.total_s += time.perf_counter() - started
    RETRIEVAL_LATENCY.observe(timings.total_s)
    return hits, timings


def gate(hits: list[Hit], settings: Settings, k: int | None = None) -> list[Hit]:
    """The relevant candidates, best fused score first, at most ``k``."""
    kept = [hit for hit in hits if relevant(hit, settings)]
    kept.sort(key=lambda h: (-h.score, -h.similarity, h.chunk_id))
    return kept[: k or settings.retrieval_top_k]


def relevant(hit: Hit, settings: Settings) -> bool:
    """The relevance gate: close in meaning, or holding every term of a question of two or more."""
    if hit.similarity >= settings.retrieval_min_similarity:
        return True
    return hit.query_terms >= 2 and hit.coverage >= settings.retrieval_min_coverage


async def candidates(
    session: AsyncSession,
    settings: Settings,
    query: str,
    k: int | None = None,
    embedder: Embedder | None = None,
    collections: Collections = None,
) -> tuple[list[Hit], Timings]:
    """Both halves' candidates, fused, not yet gated (the evaluation sweeps the gate)."""
    started = time.perf_counter()
    timings = Timings()
    query = clean(query)[:MAX_QUERY_CHARS]
    if not any(ch.isalnum() for ch in query):
        return [], timings
    query = expand(query)
    n = CANDIDATES_PER_K * (k or settings.retrieval_top_k)

    vectors = await (embedder or embedder_for(settings)).embed([query])
    vector = _vector_literal(vectors[0])
    mark = time.perf_counter()
    timings.embed_s = mark - started

    if collections is not None and not collections:
        return [], timings  # reads no collection: nothing to search
    by_vector = await vector_candidates(session, vector, n, collections)
    timings.vector_s = time.perf_counter() - mark
    mark = time.perf_counter()

    lexemes = await query_lexemes(session, query)
    common = await common_lexemes(session, settings)
    by_text = await fulltext_candidates(session, lexemes, n, common, collections)
    timings.fts_s = time.perf_counter() - mark
    mark = time.perf_counter()

    hits = await _hits(session, vector, fuse(by_vector, by_text), lexemes, collections)
    timings.fuse_s = time.perf_counter() - mark
    timings.total_s = time.perf_counter() - started
    return hits, timings


async def _hits(
    session: AsyncSession,
    vector: str,
    scores: dict[int, float],
    lexemes: list[str],
    collections: Collections = None,
) -> list[Hit]:
    """The candidates' rows, each with its similarity and how many query terms it holds."""
    if not scores:
        return []
    rows = await session.execute(
        text(
            "SELECT c.id, c.document_id, d.title, v.version, c.section, c.page, c.text,"
            " 1 - (c.embedding <=> CAST(:q AS vector)) AS similarity,"
            " (SELECT count(*) FROM unnest(tsvector_to_array(c.tsv)) AS lexeme"
            "  WHERE lexeme = ANY(CAST(:lexemes AS text[]))) AS matched"
            " FROM chunks c JOIN documents d ON d.id = c.document_id"
            " JOIN document_versions v ON v.id = c.version_id"
            " WHERE c.id = ANY(:ids) AND c.searchable AND d.status = 'active'"
            " AND (CAST(:every_collection AS boolean)"
            "  OR c.collection = ANY(CAST(:collections AS text[])))"
        ),
        {"q": vector, "ids": list(scores), "lexemes": lexemes, **collection_params(collections)},
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
            query_terms=len(lexemes),
            coverage=row.matched / len(lexemes) if lexemes else 0.0,
        )
        for row in rows
    ]
