"""Hybrid retrieval with the real all-MiniLM-L6-v2 embeddings, and the benchmark at 2,000 chunks.

The corpus: nine short synthetic guidelines of every file type, ingested through the
real pipeline (ingest_path + process_one) into a database of this module's own. The
relevance gate (settings.retrieval_min_similarity) is calibrated on the evaluation
sets the project did not write (app/kb/eval.py, app/BENCHMARKS.md), not on these.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from app import db, redis_client
from app.kb import worker
from app.kb.bench import run_bench
from app.kb.embed import LocalEmbedder
from app.kb.retrieve import (
    Hit,
    _vector_literal,
    any_of,
    fulltext_candidates,
    fuse,
    query_lexemes,
    retrieve,
    vector_candidates,
)
from app.settings import Settings
from tests.app.data import kbdocs
from tests.app.data.kbdb import isolated_settings
from tests.services.postgres import PrivatePostgres

T = TypeVar("T")

# (question, the file whose document must rank first)
COVERED = [
    ("What is the first-line antibiotic for septic shock?", "sepsis"),
    ("How much fluid should I give for hypotension in sepsis?", "sepsis"),
    ("Which drugs are given first when a patient is in septic shock?", "sepsis"),
    ("How long should I wash my hands with soap and water?", "hygiene"),
    ("Should I take off my rings before cleaning my hands?", "hygiene"),
    ("What rate should the insulin infusion start at in DKA?", "insulin"),
    ("When do I add potassium to the insulin drip?", "insulin"),
    ("Can bed rails be used to keep a confused patient in bed?", "falls"),
    ("When should falls risk be assessed after admission?", "falls"),
    ("When can visitors come to the maternity ward?", "visiting"),
    ("Can children visit the newborn?", "visiting"),
    ("What is the maximum daily dose of paracetamol?", "paracetamol"),
    ("What oxygen saturation should I aim for in COPD?", "oxygen"),
    ("What is the target INR for atrial fibrillation?", "warfarin"),
    ("When should a lithium level be taken?", "lithium"),
]
# Off topic for a hospital's policies, or a clinical topic the corpus lacks. A question
# near a covered topic ("a broken wrist", beside the falls policy) may pass the gate:
# no similarity separates those from paraphrased answerable ones on the evaluation
# sets, so the model reads the sources and gives the not-found answer.
UNCOVERED = [
    "How do I renew my car insurance?",
    "What is the capital of France?",
    "How do I book annual leave?",
    "When should a nasogastric tube position be checked?",
    "What are the symptoms of a stroke?",
    "Who is on call for cardiology tonight?",
    "What is the target blood pressure in pre-eclampsia?",
    "How do I request an MRI scan?",
    "Where is the staff car park?",
]


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on a fresh event loop, closing the pools it opened (they belong to that loop)."""

    async def go() -> T:
        try:
            return await coro
        finally:
            await db.dispose_all()
            await redis_client.close_all()

    return asyncio.run(go())


@pytest.fixture(scope="module")
def corpus(
    base_settings: Settings, postgres: PrivatePostgres, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Settings, dict[str, uuid.UUID]]:
    settings = isolated_settings(base_settings, postgres)
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "sepsis.md").write_text(kbdocs.SEPSIS_MD)
    (folder / "hygiene.html").write_text(kbdocs.HAND_HYGIENE_HTML)
    (folder / "insulin.docx").write_bytes(kbdocs.docx(kbdocs.INSULIN_DOCX))
    (folder / "falls.pdf").write_bytes(kbdocs.pdf(kbdocs.FALLS_PDF_PAGES, kbdocs.FALLS_OUTLINE))
    (folder / "visiting.txt").write_text(kbdocs.VISITING_TXT)
    for name, text in kbdocs.EXTRA_MD.items():
        (folder / name).write_text(text)
    results = run(worker.ingest_path(settings, folder, "clinchat-admin", process=True))
    assert {r.outcome for r in results} == {"ready"}, results
    return settings, {Path(r.path).stem: r.document_id for r in results if r.document_id}


def ask(settings: Settings, query: str, k: int | None = None, **update: Any) -> list[Hit]:
    use = settings.model_copy(update=update) if update else settings

    async def go() -> list[Hit]:
        async with db.sessionmaker(use)() as session:
            return await retrieve(session, use, query, k)

    return run(go())


@pytest.mark.parametrize(("question", "expected"), COVERED, ids=[q for q, _ in COVERED])
def test_the_document_holding_the_fact_ranks_first(
    corpus: tuple[Settings, dict[str, uuid.UUID]], question: str, expected: str
) -> None:
    settings, documents = corpus
    hits = ask(settings, question)
    assert hits, "a covered question found nothing"
    assert hits[0].document_id == documents[expected], [(h.title, h.similarity) for h in hits]
    assert len(hits) <= settings.retrieval_top_k
    assert hits == sorted(hits, key=lambda h: -h.score)


@pytest.mark.parametrize("question", UNCOVERED)
def test_an_uncovered_question_finds_nothing(
    corpus: tuple[Settings, dict[str, uuid.UUID]], question: str
) -> None:
    settings, _ = corpus
    assert ask(settings, question) == []


def test_hits_carry_the_citation(corpus: tuple[Settings, dict[str, uuid.UUID]]) -> None:
    settings, documents = corpus
    hit = ask(settings, "Can bed rails be used to keep a confused patient in bed?")[0]
    assert (hit.title, hit.version, hit.page) == ("falls", 1, 2)
    assert hit.section == "Falls prevention > Bed rails"
    assert "low-rise bed" in hit.text and 0.35 <= hit.similarity <= 1
    potassium = ask(settings, "When do I add potassium to the insulin drip?")[0]
    assert potassium.section == "Insulin infusion protocol > Potassium"
    assert potassium.page is None


def test_a_full_text_match_counts_below_the_similarity_threshold(
    corpus: tuple[Settings, dict[str, uuid.UUID]],
) -> None:
    settings, documents = corpus
    strict = {"retrieval_min_similarity": 0.99}  # only full-text matches can count
    hits = ask(settings, "piperacillin-tazobactam", **strict)
    assert hits and hits[0].document_id == documents["sepsis"] and hits[0].similarity < 0.99
    question = "Which drugs are given first when a patient is in septic shock?"  # no "drug" there
    assert ask(settings, question, **strict) == []


def test_each_half_on_its_own(corpus: tuple[Settings, dict[str, uuid.UUID]]) -> None:
    settings, documents = corpus

    async def halves() -> tuple[list[int], list[int], dict[int, uuid.UUID]]:
        vector = (await LocalEmbedder().embed(["serum lithium level after the last dose"]))[0]
        async with db.sessionmaker(settings)() as session:
            by_vector = await vector_candidates(session, _vector_literal(vector), 5)
            lexemes = await query_lexemes(session, "the thyroid, lithium and paracetamol")
            by_text = await fulltext_candidates(session, lexemes, 20)
            owners = {
                row.id: row.document_id
                for row in await session.execute(
                    db_text("SELECT id, document_id FROM chunks WHERE searchable")
                )
            }
        return by_vector, by_text, owners

    by_vector, by_text, owners = run(halves())
    assert len(by_vector) == 5 and owners[by_vector[0]] == documents["lithium"]
    # any of the terms matches; the chunk holding two of them ranks first
    assert owners[by_text[0]] == documents["lithium"]
    assert {owners[i] for i in by_text} == {documents["lithium"], documents["paracetamol"]}


def db_text(statement: str) -> Any:
    from sqlalchemy import text

    return text(statement)


def test_fusion_is_reciprocal_rank() -> None:
    scores = fuse([1, 2, 3], [3, 4])
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[1] == pytest.approx(1 / 61) and scores[4] == pytest.approx(1 / 62)
    assert max(scores, key=scores.__getitem__) == 3  # in both lists beats first in one


def test_common_lexemes_come_from_the_statistics_and_need_each_other(
    corpus: tuple[Settings, dict[str, uuid.UUID]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lexeme in more than COMMON_ROWS chunks is left out of the OR; all-common: AND."""
    from app.kb import retrieve as module

    settings, documents = corpus
    module._common.clear()
    monkeypatch.setattr(module, "COMMON_ROWS", 0)  # every lexeme the statistics list

    import psycopg

    with psycopg.connect(db.conninfo(settings, owner=True), autocommit=True) as conn:
        conn.execute("ANALYZE chunks")  # what autovacuum does; the owner's to run

    async def go() -> tuple[frozenset[str], list[int], list[int], dict[int, uuid.UUID]]:
        async with db.sessionmaker(settings)() as session:
            common = await module.common_lexemes(session, settings)
            lexemes = await query_lexemes(session, "lithium and paracetamol")
            either = await fulltext_candidates(session, lexemes, 20)
            both = await fulltext_candidates(session, lexemes, 20, frozenset(lexemes))
            owners = {
                row.id: row.document_id
                for row in await session.execute(db_text("SELECT id, document_id FROM chunks"))
            }
        return common, either, both, owners

    try:
        common, either, both, owners = run(go())
    finally:
        module._common.clear()
    assert {"lithium", "dose"} <= common  # the statistics' most common elements
    assert {owners[i] for i in either} == {documents["lithium"], documents["paracetamol"]}
    assert both == []  # no chunk holds both, and both are common: nothing


def test_the_question_s_lexemes_are_stemmed_without_stop_words(
    corpus: tuple[Settings, dict[str, uuid.UUID]],
) -> None:
    settings, _ = corpus

    async def lexemes(query: str) -> list[str]:
        async with db.sessionmaker(settings)() as session:
            return await query_lexemes(session, query)

    assert sorted(run(lexemes("When are the lithium levels taken?"))) == [
        "level",
        "lithium",
        "taken",
    ]
    assert run(lexemes("the of and")) == []
    assert any_of(["o'clock", "a\\b"]) == "'o''clock' | 'a\\\\b'"


def test_odd_queries_are_harmless(corpus: tuple[Settings, dict[str, uuid.UUID]]) -> None:
    settings, documents = corpus
    assert ask(settings, "   ") == [] and ask(settings, "?!") == []
    assert ask(settings, "lithium\x00 level")[0].document_id == documents["lithium"]
    assert ask(settings, 'lithium -"thyroid" OR ((( "') is not None  # websearch syntax
    assert len(ask(settings, "When should a lithium level be taken?", k=1)) == 1
    assert ask(settings, "x" * 50_000) == []


def test_latency_is_observed(corpus: tuple[Settings, dict[str, uuid.UUID]]) -> None:
    from prometheus_client import REGISTRY

    def count() -> float:
        return REGISTRY.get_sample_value("clinchat_retrieval_duration_seconds_count") or 0.0

    before = count()
    ask(corpus[0], "When should a lithium level be taken?")
    assert count() == before + 1


def test_bench_runs_at_2000_chunks(base_settings: Settings, postgres: PrivatePostgres) -> None:
    """The benchmark end to end on a small corpus: it works; nothing is timed here."""
    settings = isolated_settings(base_settings, postgres)
    result = run_bench(settings, chunks=2000, queries=10, real=200, seed=3)
    assert result["chunks"] == 2000 and result["documents"] == 2 and result["queries"] == 10
    for half in ("total", "embed", "vector", "fts", "fuse"):
        assert set(result["latency_ms"][half]) == {"p50", "p95", "mean", "max"}
    assert result["hits_per_query_mean"] > 0
    # asked again as a clinician of one of the 5 departments (the first document's)
    scoped = result["scoped"]
    assert scoped["collections"] == 5 and scoped["reads"] == ["dept-0"]
    assert scoped["hits_per_query_mean"] > 0 and 0 < scoped["vector_recall"] <= 1
    assert set(scoped["latency_ms"]["total"]) == {"p50", "p95", "mean", "max"}
    assert isinstance(result["vector_plan_uses_hnsw_index"], bool)
    assert result["machine"]["pgvector"]
