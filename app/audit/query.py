"""Searching the audit trail: filters, keyset pages and counts (the API and the page).

Pages are keyset pages on the row id, never OFFSET: the trail only grows, so a
page boundary stays put while events are appended. The API walks oldest first
(``after``: an export resumes from the last id it has); the auditor's page shows
the newest first (``before``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AuditEvent

NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"  # PostgreSQL refuses NUL; no name has control characters
ACTION = r"^[a-z_]+(\.([a-z_]+|\*))?$"  # "auth.login", or a family: "auth.*"
MAX_LIMIT = 500


class AuditFilters(BaseModel):
    """Which events: every filter given must hold (AND)."""

    model_config = {
        "extra": "forbid",
        "json_schema_extra": {
            "examples": [
                {"actor": "clin1", "action": "conversation.*", "since": "2026-11-22T00:00:00Z"},
                {"break_glass": True},
            ]
        },
    }

    actor: str | None = Field(None, max_length=256, pattern=NO_CONTROL, description="username")
    action: str | None = Field(
        None, max_length=64, pattern=ACTION, description='"auth.login", or "auth.*"'
    )
    entity_type: str | None = Field(None, max_length=32, pattern=r"^[a-z_]+$")
    entity_id: str | None = Field(None, max_length=64, pattern=NO_CONTROL)
    since: datetime | None = Field(None, description="at or after (UTC if no offset)")
    until: datetime | None = Field(None, description="before (UTC if no offset)")
    break_glass: bool | None = Field(None, description="only events flagged (or not) break-glass")

    @model_validator(mode="after")
    def _times(self) -> Self:
        # a time without an offset is UTC, as the page shows times
        if self.since and self.since.tzinfo is None:
            self.since = self.since.replace(tzinfo=UTC)
        if self.until and self.until.tzinfo is None:
            self.until = self.until.replace(tzinfo=UTC)
        if self.since and self.until and self.since > self.until:
            raise ValueError("since is after until")
        return self

    def used(self) -> list[str]:
        """The names of the filters given: what the audit trail records of a search."""
        return sorted(name for name, value in self.model_dump().items() if value is not None)

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.actor is not None:
            found.append(AuditEvent.actor == self.actor)
        if self.action is not None:
            if self.action.endswith(".*"):
                found.append(AuditEvent.action.startswith(self.action[:-1], autoescape=True))
            else:
                found.append(AuditEvent.action == self.action)
        if self.entity_type is not None:
            found.append(AuditEvent.entity_type == self.entity_type)
        if self.entity_id is not None:
            found.append(AuditEvent.entity_id == self.entity_id)
        if self.since is not None:
            found.append(AuditEvent.ts >= self.since)
        if self.until is not None:
            found.append(AuditEvent.ts < self.until)
        if self.break_glass is not None:
            found.append(AuditEvent.break_glass.is_(self.break_glass))
        return found

    def query_params(self) -> dict[str, Any]:
        """The filters as they go back into a URL (next-page links)."""
        params: dict[str, Any] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if isinstance(value, datetime):
                value = value.isoformat()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            params[name] = value
        return params


async def search(
    session: AsyncSession,
    filters: AuditFilters,
    *,
    after: int | None = None,
    before: int | None = None,
    limit: int = 100,
) -> tuple[list[AuditEvent], bool]:
    """One page of matching events and whether more follow.

    Oldest first from ``after``; newest first below ``before`` when that is given.
    """
    query = select(AuditEvent).where(*filters.conditions())
    if before is not None:
        query = query.where(AuditEvent.id < before).order_by(AuditEvent.id.desc())
    else:
        query = query.where(AuditEvent.id > (after or 0)).order_by(AuditEvent.id)
    rows = list(await session.scalars(query.limit(limit + 1)))
    return rows[:limit], len(rows) > limit


async def count(session: AsyncSession, filters: AuditFilters) -> int:
    total = await session.scalar(
        select(func.count()).select_from(AuditEvent).where(*filters.conditions())
    )
    return int(total or 0)
