"""The retrieval benchmark: hybrid retrieval latency over a large synthetic corpus.

    python -m app.kb.bench --chunks 100000 --queries 200 --out bench.json [--dsn DSN]

Without ``--dsn`` it starts a private PostgreSQL + pgvector of the tests' kind
(tests.services.postgres: a repository checkout, run as root or postgres) and
migrates it; with ``--dsn`` it uses that database, which must be empty (it is
migrated if needed, and the DSN's role must own the schema).

The corpus: synthetic clinical-guideline chunks from templates. Embedding 100,000
chunks with all-MiniLM-L6-v2 would take hours on two cores, so ``--real`` chunks
(default 3,000) get real embeddings and every other chunk is a variant of one of
them (some template slots drawn again) whose vector is the real one plus a small
random perturbation, renormalised. Queries are real questions embedded by the real
model inside ``retrieve`` (its time is reported as ``embed``). The HNSW index is
built after the load, as a bulk load would. app/BENCHMARKS.md has the results.

Departments (app/kb/collections.py): the documents are dealt round-robin into
``--collections`` collections, and every question is asked twice, side by side: as an
admin (every collection) and as a clinician who reads one of them (``scoped``), so the
cost of the collection filter on both halves is measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import torch
from pydantic import SecretStr
from sqlalchemy import text

from app.db import conninfo, sessionmaker
from app.kb.embed import LocalEmbedder
from app.kb.retrieve import (
    VECTOR_SQL,
    Collections,
    Timings,
    collection_params,
    retrieve_timed,
    vector_candidates,
)
from app.settings import Environment, Settings

TOPICS = [
    "Sepsis", "Asthma", "Heart failure", "Diabetic ketoacidosis", "Pneumonia", "Stroke",
    "Atrial fibrillation", "Pulmonary embolism", "Urinary tract infection", "Hyperkalaemia",
    "Delirium", "Falls", "Pressure ulcers", "Anaphylaxis", "Acute kidney injury",
    "COPD exacerbation", "Cellulitis", "Hypoglycaemia", "Pain management",
    "Venous thromboembolism prophylaxis",
]  # fmt: skip
SECTIONS = ["Assessment", "Treatment", "Monitoring", "Escalation", "Discharge"]
DRUGS = [
    "amoxicillin", "ceftriaxone", "piperacillin-tazobactam", "gentamicin", "salbutamol",
    "prednisolone", "furosemide", "insulin", "apixaban", "enoxaparin", "alteplase",
    "metoprolol", "digoxin", "calcium gluconate", "adrenaline", "haloperidol", "paracetamol",
    "morphine", "nitrofurantoin", "flucloxacillin",
]  # fmt: skip
ACTIONS = ["Give", "Start", "Consider", "Review", "Withhold", "Prescribe", "Continue"]
DOSES = ["500 mg", "1 g", "2 g", "5 mg", "10 mg", "40 mg", "0.1 units/kg/h", "80 mg", "2.5 mg"]
ROUTES = ["orally", "intravenously", "subcutaneously", "by nebuliser", "intramuscularly"]
TIMINGS = [
    "within one hour", "every eight hours", "twice daily", "once daily", "at night",
    "before surgery", "after 48 hours", "every six hours",
]  # fmt: skip
POPULATIONS = [
    "adults", "older adults", "children over 12", "pregnant women",
    "patients with renal impairment", "patients on the ward",
    "patients in the emergency department",
]  # fmt: skip
CHECKS = [
    "serum potassium", "blood glucose", "renal function", "blood pressure",
    "oxygen saturation", "the lactate", "the ECG", "the INR", "the respiratory rate",
]  # fmt: skip
# Norm of the noise added to a real unit vector: a variant's cosine to its base is about
# 0.71, to a sibling about 0.5, as chunks on one topic are. Tighter (0.5) makes islands of
# 33 near-identical vectors that HNSW cannot navigate between (recall 0.22; BENCHMARKS.md).
PERTURBATION = 1.0
DOCUMENT_CHUNKS = 1000  # chunks per synthetic document
RECALL_QUERIES = 50  # queries whose HNSW neighbours are compared with an exact scan


def _slots(rng: random.Random) -> dict[str, str]:
    return {
        "topic": rng.choice(TOPICS),
        "section": rng.choice(SECTIONS),
        "drug": rng.choice(DRUGS),
        "action": rng.choice(ACTIONS),
        "dose": rng.choice(DOSES),
        "route": rng.choice(ROUTES),
        "timing": rng.choice(TIMINGS),
        "timing2": rng.choice(TIMINGS),
        "population": rng.choice(POPULATIONS),
        "check": rng.choice(CHECKS),
        "drug2": rng.choice(DRUGS),
    }


def _render(slots: dict[str, str]) -> tuple[str, str]:
    """(section, text) of one chunk: four sentences, as a guideline paragraph reads."""
    s = slots
    topic = s["topic"].lower()
    text = (
        f"{s['action']} {s['drug']} {s['dose']} {s['route']} {s['timing']} for {s['population']}"
        f" with {topic}. Check {s['check']} {s['timing2']} and escalate to a senior clinician"
        f" if it worsens. Document the reason when {s['drug2']} is not given. Refer"
        f" {s['population']} with {topic} to the specialist team if there is no improvement"
        f" {s['timing2']}."
    )
    return f"{s['topic']} > {s['section']}", text


def _variant(slots: dict[str, str], rng: random.Random) -> dict[str, str]:
    """The same topic and section with two other slots drawn again."""
    fresh = _slots(rng)
    changed = dict(slots)
    for key in rng.sample(["drug", "dose", "route", "timing", "population", "check", "drug2"], 2):
        changed[key] = fresh[key]
    return changed


def _question(rng: random.Random) -> str:
    s = _slots(rng)
    topic = s["topic"].lower()
    return rng.choice(
        [
            f"What dose of {s['drug']} should be given for {topic} in {s['population']}?",
            f"How often should {s['check']} be checked in {topic}?",
            f"When should {s['population']} with {topic} be referred to the specialist team?",
            f"Is {s['drug']} given {s['route']} for {topic}?",
        ]
    )


def _perturb(base: torch.Tensor, generator: torch.Generator) -> list[float]:
    noise = torch.randn(base.shape, generator=generator) * (PERTURBATION / math.sqrt(len(base)))
    return torch.nn.functional.normalize(base + noise, dim=0).tolist()


def _literal(vector: list[float]) -> str:
    return "[" + ",".join(f"{x:.6g}" for x in vector) + "]"


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, math.ceil(p * len(ordered)) - 1))]

    return {
        "p50": round(at(0.50) * 1000, 2),
        "p95": round(at(0.95) * 1000, 2),
        "mean": round(statistics.fmean(ordered) * 1000, 2),
        "max": round(ordered[-1] * 1000, 2),
    }


def collection_of(document_number: int, collections: int) -> str:
    return f"dept-{document_number % collections}"


def load(
    settings: Settings, chunks: int, real: int, seed: int, collections: int = 1
) -> dict[str, float]:
    """Fill the (empty, migrated) database with ``chunks`` searchable chunks, their
    documents dealt round-robin into ``collections`` collections."""
    rng = random.Random(seed)  # noqa: S311 -- synthetic text, reproducible by seed
    generator = torch.Generator().manual_seed(seed)
    real = min(real, chunks)
    base_slots = [_slots(rng) for _ in range(real)]
    base_chunks = [_render(s) for s in base_slots]
    started = time.perf_counter()
    vectors = torch.tensor(
        LocalEmbedder().embed_sync([f"{section}\n{text}" for section, text in base_chunks])
    )
    embed_s = time.perf_counter() - started

    started = time.perf_counter()
    with psycopg.connect(conninfo(settings, owner=True)) as conn:
        if conn.execute("SELECT count(*) FROM documents").fetchone()[0]:  # type: ignore[index]
            raise SystemExit("the benchmark needs an empty database: this one has documents")
        documents = []
        for number in range(math.ceil(chunks / DOCUMENT_CHUNKS)):
            document_id, version_id = uuid.uuid4(), uuid.uuid4()
            conn.execute(
                "INSERT INTO documents (id, title, status, collection)"
                " VALUES (%s, %s, 'active', %s)",
                (document_id, f"Synthetic guideline {number + 1}",
                 collection_of(number, collections)),
            )  # fmt: skip
            conn.execute(
                "INSERT INTO document_versions (id, document_id, version, filename, media_type,"
                " size_bytes, sha256, content_enc, status, progress, phi_types, chunk_count)"
                " VALUES (%s, %s, 1, 'synthetic.md', 'text/markdown', 0, %s, %s, 'ready', 100,"
                " '{}', %s)",
                (version_id, document_id, uuid.uuid4().hex * 2, b"bench", DOCUMENT_CHUNKS),
            )
            documents.append((document_id, version_id, collection_of(number, collections)))
        # A bulk load builds the graph once, after the rows are in: far faster than per row.
        conn.execute("DROP INDEX IF EXISTS chunks_embedding_hnsw")
        with conn.cursor().copy(
            "COPY chunks (version_id, document_id, ordinal, section, page, text, embedding,"
            " searchable, collection) FROM STDIN"
        ) as copy:
            for i in range(chunks):
                base = i % real
                document_id, version_id, collection = documents[i // DOCUMENT_CHUNKS]
                if i < real:
                    section, text = base_chunks[i]
                    vector = vectors[i].tolist()
                else:
                    section, text = _render(_variant(base_slots[base], rng))
                    vector = _perturb(vectors[base], generator)
                copy.write_row(
                    (version_id, document_id, i % DOCUMENT_CHUNKS, section, None, text,
                     _literal(vector), True, collection)
                )  # fmt: skip
        conn.commit()
        load_s = time.perf_counter() - started

        started = time.perf_counter()
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(
            "CREATE INDEX chunks_embedding_hnsw ON chunks USING hnsw (embedding vector_cosine_ops)"
            " WITH (m = 16, ef_construction = 64)"
        )
        conn.execute("ANALYZE chunks")
        conn.commit()
        index_s = time.perf_counter() - started
    return {"embed_corpus_s": embed_s, "load_s": load_s, "index_build_s": index_s}


@dataclass
class Measured:
    """One way of asking (every collection, or one): its timings, hits and recall."""

    timings: list[Timings] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    recall: float = 0.0


async def _measure(
    settings: Settings, questions: list[str], k: int, warmup: int, scope: frozenset[str]
) -> tuple[Measured, Measured, bool]:
    """Each question asked of every collection, then of ``scope`` only (side by side)."""
    embedder = LocalEmbedder()
    every, scoped = Measured(), Measured()
    maker = sessionmaker(settings)
    async with maker() as session:
        # the plan of the vector half, to show that the HNSW index serves it
        probe = _literal((await embedder.embed([questions[0]]))[0])
        await session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        plan = await session.execute(
            text("EXPLAIN " + VECTOR_SQL), {"q": probe, "n": 4 * k, **collection_params(None)}
        )
        uses_index = any("chunks_embedding_hnsw" in row[0] for row in plan)
        await session.rollback()
    sample = questions[warmup : warmup + RECALL_QUERIES]
    every.recall = await _recall(settings, embedder, sample, 4 * k, None)
    scoped.recall = await _recall(settings, embedder, sample, 4 * k, scope)
    for number, question in enumerate(questions):
        for measured, collections in ((every, None), (scoped, scope)):
            async with maker() as session:
                hits, spent = await retrieve_timed(
                    session, settings, question, k, embedder, collections
                )
                await session.rollback()  # ends the transaction its SET LOCALs belong to
            if number >= warmup:
                measured.timings.append(spent)
                measured.counts.append(len(hits))
    from app import db

    await db.dispose_all()
    return every, scoped, uses_index


async def _recall(
    settings: Settings,
    embedder: LocalEmbedder,
    questions: list[str],
    n: int,
    collections: Collections,
) -> float:
    """The share of the exact ``n`` nearest chunks (of ``collections``) that the HNSW
    search returns."""
    found = total = 0
    async with sessionmaker(settings)() as session:
        for question in questions:
            vector = _literal((await embedder.embed([question]))[0])
            approximate = await vector_candidates(session, vector, n, collections)
            await session.rollback()
            await session.execute(text("SET LOCAL enable_indexscan = off"))  # exact: scan all
            params = {"q": vector, "n": n, **collection_params(collections)}
            exact = [row.id for row in await session.execute(text(VECTOR_SQL), params)]
            await session.rollback()
            found += len(set(approximate) & set(exact))
            total += len(exact)
    return found / total if total else 0.0


def _versions(settings: Settings) -> dict[str, str]:
    with psycopg.connect(conninfo(settings)) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        vector = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()[0]  # type: ignore[index]
        buffers = conn.execute("SHOW shared_buffers").fetchone()[0]  # type: ignore[index]
    return {"postgresql": server, "pgvector": vector, "shared_buffers": buffers}


def run_bench(
    settings: Settings,
    chunks: int = 100_000,
    queries: int = 200,
    real: int = 3000,
    seed: int = 7,
    k: int = 6,
    collections: int = 5,
) -> dict[str, Any]:
    """Load the corpus into ``settings``' (empty, migrated) database and time retrieval."""
    phases = load(settings, chunks, real, seed, collections)
    rng = random.Random(seed + 1)  # noqa: S311 -- synthetic questions
    warmup = min(10, queries)
    questions = [_question(rng) for _ in range(queries + warmup)]
    scope = frozenset({collection_of(0, collections)})
    every, scoped, uses_index = asyncio.run(_measure(settings, questions, k, warmup, scope))
    timings, counts, recall = every.timings, every.counts, every.recall
    return {
        "chunks": chunks,
        "documents": math.ceil(chunks / DOCUMENT_CHUNKS),
        "real_embeddings": min(real, chunks),
        "perturbation_norm": PERTURBATION,
        "queries": len(timings),
        "warmup_queries": warmup,
        "k": k,
        "candidates_per_half": 4 * k,
        "vector_plan_uses_hnsw_index": uses_index,
        "vector_recall": round(recall, 4),
        "recall_queries": min(RECALL_QUERIES, len(timings)),
        **{name: round(value, 2) for name, value in phases.items()},
        "latency_ms": {
            "total": _percentiles([t.total_s for t in timings]),
            "embed": _percentiles([t.embed_s for t in timings]),
            "vector": _percentiles([t.vector_s for t in timings]),
            "fts": _percentiles([t.fts_s for t in timings]),
            "fuse": _percentiles([t.fuse_s for t in timings]),
        },
        "hits_per_query_mean": round(statistics.fmean(counts), 2) if counts else 0,
        "scoped": {
            "collections": collections,
            "reads": sorted(scope),
            "vector_recall": round(scoped.recall, 4),
            "latency_ms": {
                "total": _percentiles([t.total_s for t in scoped.timings]),
                "vector": _percentiles([t.vector_s for t in scoped.timings]),
                "fts": _percentiles([t.fts_s for t in scoped.timings]),
            },
            "hits_per_query_mean": (
                round(statistics.fmean(scoped.counts), 2) if scoped.counts else 0
            ),
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(),
            **_versions(settings),
        },
    }


def settings_from_dsn(dsn: str) -> Settings:
    """Settings for a given database: the DSN's role is both the app and the owner."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    password = str(parts.get("password") or "")
    return Settings(  # type: ignore[call-arg]
        environment=Environment.development,
        cookie_secure=False,
        db_host=str(parts.get("host") or "127.0.0.1"),
        db_port=int(parts.get("port") or 5432),
        db_name=str(parts.get("dbname") or "postgres"),
        db_user=str(parts.get("user") or "postgres"),
        db_password=SecretStr(password),
        db_owner_user=str(parts.get("user") or "postgres"),
        db_owner_password=SecretStr(password),
        db_sslmode=str(parts.get("sslmode") or "prefer"),
        db_sslrootcert=str(parts["sslrootcert"]) if parts.get("sslrootcert") else None,
    )


@contextmanager
def private_postgres() -> Iterator[Settings]:
    """A throwaway PostgreSQL + pgvector like the tests' (needs the repository's tests/)."""
    import secrets

    from tests.services.pki import make_pki
    from tests.services.postgres import PrivatePostgres

    # two folders: the server's is handed to the postgres user, the certificates' stays root's
    root = Path(tempfile.mkdtemp(prefix="clinchat-bench-pg-"))
    pki_root = Path(tempfile.mkdtemp(prefix="clinchat-bench-pki-"))
    server = PrivatePostgres(root=root, pki=make_pki(pki_root))
    server.init()
    try:
        # room for the 100k-vector table and its graph in memory (the default is 128 MB)
        server.psql("ALTER SYSTEM SET shared_buffers = '1GB'")
        server.stop()
        server.start()
        owner_password = secrets.token_urlsafe(24)
        server.psql(f"CREATE ROLE clinchat_owner LOGIN PASSWORD '{owner_password}'")
        server.psql(f"ALTER DATABASE {server.database} OWNER TO clinchat_owner")
        for statement in (
            "ALTER SCHEMA public OWNER TO clinchat_owner",
            f"GRANT USAGE ON SCHEMA public TO {server.user}",
            "CREATE EXTENSION IF NOT EXISTS vector",
        ):
            server.psql(statement, database=server.database)
        yield Settings(  # type: ignore[call-arg]
            environment=Environment.development,
            cookie_secure=False,
            db_port=server.port,
            db_name=server.database,
            db_user=server.user,
            db_password=SecretStr(server.password),
            db_owner_user="clinchat_owner",
            db_owner_password=SecretStr(owner_password),
            db_sslmode="verify-full",
            db_sslrootcert=str(server.pki.ca_cert),
        )
    finally:
        if server.is_running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pki_root, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--real", type=int, default=3000, help="chunks with real embeddings")
    parser.add_argument("--k", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--collections", type=int, default=5, help="departments the documents are dealt into"
    )
    parser.add_argument("--dsn", help="an empty database to use (default: a private server)")
    parser.add_argument("--out", type=Path, help="write the JSON here too")
    args = parser.parse_args(argv)

    def bench(settings: Settings) -> dict[str, Any]:
        return run_bench(
            settings, args.chunks, args.queries, args.real, args.seed, args.k, args.collections
        )

    report(bench, args.dsn, args.out, "python -m app.kb.bench", argv)


def report(
    measure: Callable[[Settings], dict[str, Any]],
    dsn: str | None,
    out: Path | None,
    command: str,
    argv: list[str] | None,
) -> None:
    """``measure`` on a migrated database (``dsn``'s, else a private one); the JSON printed
    and written to ``out``, with the command that produced it."""
    from app import migrate

    def run(settings: Settings) -> dict[str, Any]:
        migrate.upgrade(settings)
        return measure(settings)

    if dsn:
        result = run(settings_from_dsn(dsn))
    else:
        with private_postgres() as settings:
            result = run(settings)
    result["command"] = f"{command} " + " ".join(argv or sys.argv[1:])
    output = json.dumps(result, indent=2)
    if out:
        out.write_text(output + "\n")
    print(output)


if __name__ == "__main__":
    main()
