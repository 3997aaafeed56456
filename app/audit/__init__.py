"""The audit trail: an append-only hash chain in PostgreSQL (see app/audit/chain.py)."""

from app.audit.chain import AuditUnavailable, record, verify

__all__ = ["AuditUnavailable", "record", "verify"]
