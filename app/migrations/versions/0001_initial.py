"""The initial schema: users, documents and chunks (pgvector, full-text), conversations,
messages, and the append-only audit chain.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = [
    """
    CREATE TABLE audit_events (
        id BIGSERIAL NOT NULL,
        ts TIMESTAMP WITH TIME ZONE NOT NULL,
        action VARCHAR(64) NOT NULL,
        outcome VARCHAR(16) NOT NULL,
        actor VARCHAR(256) NOT NULL,
        actor_roles VARCHAR(32)[] NOT NULL,
        entity_type VARCHAR(32) NOT NULL,
        entity_id VARCHAR(64) NOT NULL,
        break_glass BOOLEAN NOT NULL,
        source_ip VARCHAR(64) NOT NULL,
        detail JSONB NOT NULL,
        prev_hash VARCHAR(64) NOT NULL,
        hash VARCHAR(64) NOT NULL,
        PRIMARY KEY (id),
        UNIQUE (hash)
    )
    """,
    """
    CREATE INDEX ix_audit_events_action ON audit_events (action)
    """,
    """
    CREATE INDEX ix_audit_events_actor ON audit_events (actor)
    """,
    """
    CREATE TABLE users (
        id UUID NOT NULL,
        username VARCHAR(256) NOT NULL,
        display_name VARCHAR(256) NOT NULL,
        source VARCHAR(16) NOT NULL,
        password_hash TEXT,
        roles VARCHAR(32)[] NOT NULL,
        disabled BOOLEAN NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        last_login_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (id),
        UNIQUE (username)
    )
    """,
    """
    CREATE TABLE conversations (
        id UUID NOT NULL,
        user_id UUID NOT NULL,
        title_enc BYTEA NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (id),
        FOREIGN KEY(user_id) REFERENCES users (id)
    )
    """,
    """
    CREATE INDEX ix_conversations_user_id ON conversations (user_id)
    """,
    """
    CREATE TABLE documents (
        id UUID NOT NULL,
        title VARCHAR(512) NOT NULL,
        status VARCHAR(16) NOT NULL,
        created_by UUID,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        retired_at TIMESTAMP WITH TIME ZONE,
        PRIMARY KEY (id),
        FOREIGN KEY(created_by) REFERENCES users (id)
    )
    """,
    """
    CREATE TABLE document_versions (
        id UUID NOT NULL,
        document_id UUID NOT NULL,
        version INTEGER NOT NULL,
        filename VARCHAR(512) NOT NULL,
        media_type VARCHAR(128) NOT NULL,
        size_bytes BIGINT NOT NULL,
        sha256 VARCHAR(64) NOT NULL,
        content_enc BYTEA NOT NULL,
        status VARCHAR(16) NOT NULL,
        progress INTEGER NOT NULL,
        error TEXT,
        phi_types JSONB NOT NULL,
        chunk_count INTEGER NOT NULL,
        created_by UUID,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (id),
        UNIQUE (document_id, version),
        FOREIGN KEY(document_id) REFERENCES documents (id) ON DELETE CASCADE,
        FOREIGN KEY(created_by) REFERENCES users (id)
    )
    """,
    """
    CREATE TABLE messages (
        id UUID NOT NULL,
        conversation_id UUID NOT NULL,
        role VARCHAR(16) NOT NULL,
        content_enc BYTEA NOT NULL,
        citations JSONB NOT NULL,
        grounded BOOLEAN NOT NULL,
        model VARCHAR(256) NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        PRIMARY KEY (id),
        FOREIGN KEY(conversation_id) REFERENCES conversations (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE INDEX ix_messages_conversation_id ON messages (conversation_id)
    """,
    """
    CREATE TABLE chunks (
        id BIGSERIAL NOT NULL,
        version_id UUID NOT NULL,
        document_id UUID NOT NULL,
        ordinal INTEGER NOT NULL,
        section TEXT NOT NULL,
        page INTEGER,
        text TEXT NOT NULL,
        embedding VECTOR(384) NOT NULL,
        tsv TSVECTOR GENERATED ALWAYS AS
            (to_tsvector('english', section || ' ' || text)) STORED NOT NULL,
        searchable BOOLEAN NOT NULL,
        PRIMARY KEY (id),
        FOREIGN KEY(version_id) REFERENCES document_versions (id) ON DELETE CASCADE,
        FOREIGN KEY(document_id) REFERENCES documents (id) ON DELETE CASCADE
    )
    """,
    """
    CREATE INDEX chunks_embedding_hnsw ON chunks
    USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)
    """,
    """
    CREATE INDEX chunks_tsv_gin ON chunks USING gin (tsv)
    """,
    """
    CREATE INDEX ix_chunks_document_id ON chunks (document_id)
    """,
    """
    CREATE INDEX ix_chunks_searchable ON chunks (searchable)
    """,
    """
    CREATE INDEX ix_chunks_version_id ON chunks (version_id)
    """,
]

# The app's role reads and writes everything except the audit chain, which it may
# only append to and read. The trigger stops even the owner from editing history
# by accident (the HMAC chain catches the rest: app/audit/chain.py).
GRANTS = [
    "GRANT SELECT, INSERT, UPDATE, DELETE ON users, documents, document_versions, chunks, "
    "conversations, messages TO {app}",
    "GRANT SELECT, INSERT ON audit_events TO {app}",
    "GRANT USAGE, SELECT ON SEQUENCE audit_events_id_seq, chunks_id_seq TO {app}",
    "REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC",
]
APPEND_ONLY = [
    """
    CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit_events is append-only';
    END $$
    """,
    """
    CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE OR TRUNCATE
    ON audit_events FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()
    """,
]


def upgrade(app_role: str) -> None:
    # pgvector is installed by a superuser (roles/postgresql, or the test fixture): the
    # owner cannot create an untrusted extension, only find it there.
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    for statement in TABLES + APPEND_ONLY:
        op.execute(statement)
    for grant in GRANTS:
        op.execute(grant.format(app=op.get_bind().dialect.identifier_preparer.quote(app_role)))


def downgrade(app_role: str) -> None:
    raise NotImplementedError("0001 is the first schema: restore a backup instead")
