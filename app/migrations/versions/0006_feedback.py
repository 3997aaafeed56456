"""Feedback on answers (app/chat/feedback.py): a clinician's thumbs up or down on an
answer, with an optional category and comment, kept for the admins' review queue.

The comment, a snapshot of what was rated (the question, the answer, its citations with
document ids and versions) and the admin's review note are stored envelope-encrypted,
each bound to its feedback row and the clinician who gave it (app/sealed.py). The
snapshot is why ``message_id`` may become NULL: deleting a conversation deletes its
messages, the safety signal stays. One feedback per user and message (a second one
replaces the first); the CHECK constraints repeat what the API validates.

The app's role may read, add and update feedback, not delete it.

Backward compatible for a rollback: the previous release neither reads nor writes the
table, so it runs on this schema unchanged. ``downgrade`` drops the table, and with it
the feedback given since the upgrade.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENTS = [
    """
    CREATE TABLE feedback (
        id UUID NOT NULL,
        message_id UUID,
        user_id UUID NOT NULL,
        rating VARCHAR(8) NOT NULL,
        category VARCHAR(32),
        comment_enc BYTEA,
        snapshot_enc BYTEA NOT NULL,
        created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
        status VARCHAR(16) NOT NULL,
        reviewed_by UUID,
        reviewed_at TIMESTAMP WITH TIME ZONE,
        review_note_enc BYTEA,
        PRIMARY KEY (id),
        UNIQUE (user_id, message_id),
        FOREIGN KEY(message_id) REFERENCES messages (id) ON DELETE SET NULL,
        FOREIGN KEY(user_id) REFERENCES users (id),
        FOREIGN KEY(reviewed_by) REFERENCES users (id),
        CONSTRAINT feedback_rating CHECK (rating IN ('up', 'down')),
        CONSTRAINT feedback_category
            CHECK (category IN ('wrong', 'outdated_policy', 'unsafe', 'missing_source')),
        CONSTRAINT feedback_category_only_down CHECK (category IS NULL OR rating = 'down'),
        CONSTRAINT feedback_status CHECK (status IN ('open', 'reviewed'))
    )
    """,
    # deleting a conversation's messages looks up their feedback by message_id
    """
    CREATE INDEX ix_feedback_message_id ON feedback (message_id)
    """,
    """
    CREATE INDEX ix_feedback_status_created_at ON feedback (status, created_at)
    """,
]


def upgrade(app_role: str) -> None:
    for statement in STATEMENTS:
        op.execute(statement)
    role = op.get_bind().dialect.identifier_preparer.quote(app_role)
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON feedback TO {role}")


def downgrade(app_role: str) -> None:
    op.execute("DROP TABLE feedback")
