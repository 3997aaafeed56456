"""The knowledge base: parse uploads, chunk along their structure, embed, store, retrieve.

- ``parse``: detect the file type from the content, refuse bad files with a typed error,
  extract text blocks (text, heading path, page);
- ``chunk``: group blocks into chunks that never cross a page or a section;
- ``embed``: all-MiniLM-L6-v2 in this process, or the serving's /v1/embeddings;
- ``ingest`` and ``store``: uploads and versions, stored encrypted, queued in Redis;
- ``worker``: the ingestion worker (``python -m app.kb.worker``), reindex, ingest a folder;
- ``retrieve``: hybrid retrieval (HNSW vector search + full text, reciprocal rank fusion);
- ``bench``: the retrieval benchmark (app/BENCHMARKS.md).
"""
