"""The auditor's page: GET /audit (filters, newest events first, keyset pages) and
POST /audit/verify (walk the HMAC chain and show the verdict).

Both are for auditors only, and both are audited themselves (``audit.read``,
``audit.verify``). The filter form is a plain GET form; the verify form posts the
session's ``csrf_token``. Times are shown and read as UTC.
"""

from datetime import UTC
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from app.audit import record
from app.audit.chain import Verdict, verify
from app.audit.query import AuditFilters, search
from app.auth.deps import Auditor
from app.auth.principal import Principal
from app.db import DbSession
from app.models import AuditEvent
from app.settings import Settings, get_settings
from app.web import render

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(get_settings)]

PAGE_SIZE = 100
FORM_FIELDS = ("actor", "action", "since", "until")
_MAX_CURSOR = 2**63 - 1


def _form(request: Request) -> dict[str, str]:
    """The filter form's fields as typed (kept in the form), empty ones left out."""
    values = {name: request.query_params.get(name, "").strip() for name in FORM_FIELDS}
    values = {name: value for name, value in values.items() if value}
    if request.query_params.get("break_glass") in ("1", "true", "on"):
        values["break_glass"] = "true"
    return values


def _cursor(request: Request) -> int | None:
    raw = request.query_params.get("before", "")
    if raw.isdigit() and 0 < int(raw) <= _MAX_CURSOR:
        return int(raw)
    if raw:
        raise ValueError("before")
    return None


def _verdict_text(verdict: Verdict) -> str:
    if verdict.ok:
        last = f"last event {verdict.last_id}, hash {verdict.last_hash}" if verdict.last_id else ""
        return f"Chain intact: {verdict.checked} events verified. {last}".strip()
    return (
        f"Chain broken at event {verdict.first_broken_id}: {verdict.reason}. "
        f"The last intact event is {verdict.last_id or 'none'}."
    )


async def _page(
    request: Request,
    db: DbSession,
    settings: Settings,
    principal: Principal,
    form: dict[str, str],
    before: int | None = None,
    verdict: Verdict | None = None,
) -> HTMLResponse:
    try:
        filters = AuditFilters.model_validate(form)
    except ValidationError as exc:
        # name the fields only: an error message could echo what was typed
        fields = sorted({str(error["loc"][0]) for error in exc.errors() if error["loc"]})
        error = f"Check these filters: {', '.join(fields) or 'since, until'}."
        return _render(request, form, [], None, error, None, 422)
    # newest first: the first page is the one below the largest possible id
    rows, more = await search(db, filters, before=before or _MAX_CURSOR, limit=PAGE_SIZE)
    await record(
        db,
        settings,
        "audit.read",
        principal.actor,
        entity_type="audit_event",
        detail={"filters": filters.used(), "before": before or 0, "returned": len(rows)},
    )
    await db.commit()
    next_url = f"/audit?{urlencode({**form, 'before': rows[-1].id})}" if more else None
    return _render(request, form, rows, next_url, "", verdict)


def _row(event: AuditEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "time": event.ts.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "actor": event.actor,
        "roles": ", ".join(event.actor_roles or []),
        "action": event.action,
        "outcome": event.outcome,
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "break_glass": event.break_glass,
        "hash": event.hash,
    }


def _render(
    request: Request,
    form: dict[str, str],
    rows: list[AuditEvent],
    next_url: str | None,
    error: str,
    verdict: Verdict | None,
    status_code: int = 200,
) -> HTMLResponse:
    return render(
        request,
        "audit.html",
        status_code=status_code,
        form=form,
        rows=[_row(event) for event in rows],
        next_url=next_url,
        error=error,
        verdict=verdict,
        verdict_text=_verdict_text(verdict) if verdict else "",
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_page(
    principal: Auditor, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    form = _form(request)
    try:
        before = _cursor(request)
    except ValueError:
        return _render(request, form, [], None, "That page link is not valid.", None, 422)
    return await _page(request, db, settings, principal, form, before)


@router.post("/audit/verify", response_class=HTMLResponse)
async def verify_page(
    principal: Auditor, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    verdict = await verify(db, settings)
    await record(
        db,
        settings,
        "audit.verify",
        principal.actor,
        outcome="success" if verdict.ok else "failure",
        entity_type="audit_event",
        entity_id=str(verdict.first_broken_id or ""),
        detail={"ok": verdict.ok, "checked": verdict.checked, "last_id": verdict.last_id},
    )
    await db.commit()
    return await _page(request, db, settings, principal, {}, verdict=verdict)
