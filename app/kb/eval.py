"""Retrieval quality on an evaluation set: did the right policy come first, and were
the questions no policy answers refused?

    python -m app.kb.eval tests/app/retrieval_eval/northfield [--out eval.json] [--dsn DSN]

A set is a folder (its README says who wrote it, and how):

- ``policies/*.md``: one document each, titled by its first ``# `` heading;
- ``questions.jsonl``: ``{"id", "question", "policy", "section"}`` per line, where
  ``policy`` is the answering file's stem, or null when no policy answers it.

The documents go through the real parser, chunker and embedding model into a
private PostgreSQL + pgvector (as app/kb/bench.py starts one), and every question
through ``app.kb.retrieve`` with the settings' gate. Reported:

- recall@1: answerable questions whose first hit is from the right policy;
- recall@5: ... whose right policy is among the first five hits;
- correct refusals: unanswerable questions that got no hit (the chat's "not found");
- false refusals: answerable questions that got none.

``--sweep`` also reports those numbers over a grid of the gate's two thresholds,
which is how the defaults were calibrated (on the sets, never on one alone:
app/BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from app.db import conninfo, sessionmaker
from app.kb.bench import report
from app.kb.chunk import chunk_blocks
from app.kb.embed import LocalEmbedder
from app.kb.parse import parse
from app.kb.retrieve import Hit, _vector_literal, candidates, gate, retrieve_timed
from app.settings import Settings

RECALL_AT = 5
SIMILARITY_GRID = [round(0.15 + 0.025 * i, 3) for i in range(15)]  # 0.15 .. 0.50
COVERAGE_GRID = [0.6, 0.75, 0.9, 1.0, 1.01]  # 1.01: the full-text route closed


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    policy: str | None  # the answering file's stem; None: nothing answers it


@dataclass(frozen=True)
class Outcome:
    question: Question
    documents: list[str]  # the hits' policy stems, first hit first
    top_similarity: float
    seconds: float

    @property
    def refused(self) -> bool:
        return not self.documents


def read_set(folder: Path) -> tuple[list[Path], list[Question]]:
    policies = sorted((folder / "policies").glob("*.md"))
    stems = {path.stem for path in policies}
    questions = []
    for line in (folder / "questions.jsonl").read_text().splitlines():
        if line.strip():
            item = json.loads(line)
            if item["policy"] is not None and item["policy"] not in stems:
                raise SystemExit(f"{item['id']}: no policy {item['policy']!r} in the set")
            questions.append(Question(item["id"], item["question"], item["policy"]))
    if not policies or not questions:
        raise SystemExit(f"{folder}: no policies/*.md or no questions.jsonl lines")
    return policies, questions


def _title(path: Path, data: str) -> str:
    for line in data.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def load(settings: Settings, policies: list[Path]) -> tuple[dict[uuid.UUID, str], int]:
    """Parse, chunk and embed the policies into the (empty, migrated) database."""
    embedder = LocalEmbedder()
    owners: dict[uuid.UUID, str] = {}
    count = 0
    with psycopg.connect(conninfo(settings, owner=True)) as conn:
        for path in policies:
            data = path.read_bytes()
            chunks = chunk_blocks(parse(data, path.name).blocks, settings.chunk_max_chars)
            vectors = embedder.embed_sync([c.embedding_input() for c in chunks])
            count += len(chunks)
            document_id, version_id = uuid.uuid4(), uuid.uuid4()
            owners[document_id] = path.stem
            conn.execute(
                "INSERT INTO documents (id, title, status) VALUES (%s, %s, 'active')",
                (document_id, _title(path, data.decode())),
            )
            conn.execute(
                "INSERT INTO document_versions (id, document_id, version, filename, media_type,"
                " size_bytes, sha256, content_enc, status, progress, phi_types, chunk_count)"
                " VALUES (%s, %s, 1, %s, 'text/markdown', %s, %s, %s, 'ready', 100, '{}', %s)",
                (version_id, document_id, path.name, len(data), uuid.uuid4().hex * 2, b"eval",
                 len(chunks)),
            )  # fmt: skip
            for ordinal, (chunk, vector) in enumerate(zip(chunks, vectors, strict=True)):
                conn.execute(
                    "INSERT INTO chunks (version_id, document_id, ordinal, section, page, text,"
                    " embedding, searchable) VALUES (%s, %s, %s, %s, %s, %s, %s, true)",
                    (version_id, document_id, ordinal, chunk.section, chunk.page, chunk.text,
                     _vector_literal(vector)),
                )  # fmt: skip
        conn.commit()
    return owners, count


async def _ask(
    settings: Settings, questions: list[Question], gated: bool
) -> list[tuple[Question, list[Hit], float]]:
    """Each question through ``retrieve`` (gated) or only up to its candidates (for the sweep)."""
    embedder = LocalEmbedder()
    maker = sessionmaker(settings)
    found = []
    for question in [questions[0], *questions]:  # the first once more: a warm-up, dropped
        async with maker() as session:
            started = time.perf_counter()
            ask = retrieve_timed if gated else candidates
            hits, _ = await ask(session, settings, question.question, None, embedder)
            seconds = time.perf_counter() - started
            await session.rollback()
        found.append((question, hits, seconds))
    from app import db

    await db.dispose_all()
    return found[1:]


def outcomes_of(
    found: list[tuple[Question, list[Hit], float]], owners: dict[uuid.UUID, str]
) -> list[Outcome]:
    return [
        Outcome(
            question,
            [owners[hit.document_id] for hit in hits],
            max((hit.similarity for hit in hits), default=0.0),
            seconds,
        )
        for question, hits, seconds in found
    ]


def decide(
    settings: Settings, found: list[tuple[Question, list[Hit], float]], owners: dict[uuid.UUID, str]
) -> list[Outcome]:
    """What ``retrieve`` would return for each question's candidates under ``settings``' gate."""
    return outcomes_of([(q, gate(hits, settings), s) for q, hits, s in found], owners)


def score(outcomes: list[Outcome]) -> dict[str, Any]:
    answerable = [o for o in outcomes if o.question.policy is not None]
    unanswerable = [o for o in outcomes if o.question.policy is None]
    first = sum(1 for o in answerable if o.documents[:1] == [o.question.policy])
    within = sum(1 for o in answerable if o.question.policy in o.documents[:RECALL_AT])
    return {
        "answerable": len(answerable),
        "unanswerable": len(unanswerable),
        "recall_at_1": round(first / len(answerable), 3) if answerable else None,
        f"recall_at_{RECALL_AT}": round(within / len(answerable), 3) if answerable else None,
        "correct_refusals": sum(1 for o in unanswerable if o.refused),
        "false_refusals": sum(1 for o in answerable if o.refused),
    }


def sweep(
    settings: Settings, found: list[tuple[Question, list[Hit], float]], owners: dict[uuid.UUID, str]
) -> list[dict[str, Any]]:
    rows = []
    for similarity in SIMILARITY_GRID:
        for coverage in COVERAGE_GRID:
            gate = settings.model_copy(
                update={"retrieval_min_similarity": similarity, "retrieval_min_coverage": coverage}
            )
            rows.append(
                {"min_similarity": similarity, "min_coverage": coverage}
                | score(decide(gate, found, owners))
            )
    return rows


def evaluate(settings: Settings, folder: Path, with_sweep: bool = False) -> dict[str, Any]:
    policies, questions = read_set(folder)
    started = time.perf_counter()
    owners, chunks = load(settings, policies)
    load_s = time.perf_counter() - started
    outcomes = outcomes_of(asyncio.run(_ask(settings, questions, gated=True)), owners)
    seconds = sorted(o.seconds for o in outcomes)
    result: dict[str, Any] = {
        "set": folder.name,
        "policies": len(policies),
        "chunks": chunks,
        "gate": {
            "min_similarity": settings.retrieval_min_similarity,
            "min_coverage": settings.retrieval_min_coverage,
            "top_k": settings.retrieval_top_k,
        },
        **score(outcomes),
        "load_s": round(load_s, 1),
        "retrieval_ms": {
            "p50": round(1000 * statistics.median(seconds), 1),
            "p95": round(1000 * seconds[int(0.95 * (len(seconds) - 1))], 1),
        },
        "misses": [
            {
                "id": o.question.id,
                "expected": o.question.policy,
                "got": o.documents[:3],
                "top_similarity": round(o.top_similarity, 3),
            }
            for o in outcomes
            if (o.question.policy is None) != o.refused
            or (o.question.policy is not None and o.documents[:1] != [o.question.policy])
        ],
    }
    if with_sweep:
        found = asyncio.run(_ask(settings, questions, gated=False))
        result["sweep"] = sweep(settings, found, owners)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set", type=Path, help="the set's folder")
    parser.add_argument("--dsn", help="an empty database to use (default: a private server)")
    parser.add_argument("--sweep", action="store_true", help="also sweep the gate's thresholds")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)

    report(
        lambda settings: evaluate(settings, args.set, args.sweep),
        args.dsn,
        args.out,
        "python -m app.kb.eval",
        argv,
    )


if __name__ == "__main__":
    main()
