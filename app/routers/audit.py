"""The audit trail for auditors, as FHIR R4: GET /api/v1/audit (a searchset Bundle of
AuditEvent resources) and GET /api/v1/audit/{id}.

Filters are query parameters (``AuditSearch``); an unknown or malformed one is a 422.
Pages are keyset pages, oldest first: follow the Bundle's ``next`` link (``after`` the
last id) until there is none. Reading the trail is itself audited (``audit.read``,
with the names of the filters used, never their values).
"""

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.audit import fhir, record
from app.audit.query import MAX_LIMIT, AuditFilters, count, search
from app.auth.deps import Auditor, require_scope
from app.auth.tokens import Scope
from app.db import DbSession
from app.models import AuditEvent
from app.settings import Settings, get_settings

router = APIRouter(
    prefix="/api/v1/audit", tags=["audit"], dependencies=[Depends(require_scope(Scope.audit))]
)
SettingsDep = Annotated[Settings, Depends(get_settings)]


class FhirResponse(JSONResponse):
    media_type = fhir.FHIR_JSON


class AuditSearch(AuditFilters):
    after: int = Field(0, ge=0, description="only events with a greater id (the next page)")
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description="events per page")


_EVENT_EXAMPLE: dict[str, Any] = {
    "resourceType": "AuditEvent",
    "id": "42",
    "extension": [
        {
            "url": fhir.CHAIN_EXTENSION,
            "extension": [
                {"url": "hash", "valueString": "9f2c..."},
                {"url": "previousHash", "valueString": "41d0..."},
            ],
        }
    ],
    "type": fhir.PATIENT_RECORD,
    "subtype": [
        {"system": fhir.RESTFUL, "code": "read", "display": "read"},
        {"system": fhir.ACTION_SYSTEM, "code": "conversation.read", "display": "conversation.read"},
    ],
    "action": "R",
    "recorded": "2026-11-22T10:00:00.000000Z",
    "outcome": "0",
    "purposeOfEvent": [{"coding": [fhir.BREAK_THE_GLASS], "text": "covering ward 7 overnight"}],
    "agent": [
        {
            "who": {"identifier": {"system": fhir.USERNAME_SYSTEM, "value": "clin1"}},
            "requestor": True,
            "network": {"address": "10.0.0.7", "type": "2"},
        }
    ],
    "source": {"site": "clinchat", "observer": {"display": "ClinChat"}},
    "entity": [
        {
            "what": {"identifier": {"system": f"{fhir.NAMESPACE}/sid/conversation", "value": "…"}},
            "type": {"system": fhir.ENTITY_TYPE, "code": "2", "display": "System Object"},
        }
    ],
}


class BundleLink(BaseModel):
    relation: Literal["self", "next"]
    url: str


class BundleEntry(BaseModel):
    fullUrl: str  # noqa: N815 -- FHIR's name
    resource: dict[str, Any] = Field(description="a FHIR R4 AuditEvent")
    search: dict[str, str]


class AuditBundle(BaseModel):
    """A FHIR R4 Bundle (searchset) of AuditEvent resources."""

    resourceType: Literal["Bundle"] = "Bundle"  # noqa: N815 -- FHIR's name
    type: Literal["searchset"] = "searchset"
    total: int = Field(description="events matching the filters, all pages")
    link: list[BundleLink]
    entry: list[BundleEntry]

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "resourceType": "Bundle",
                    "type": "searchset",
                    "total": 1234,
                    "link": [
                        {"relation": "self", "url": "https://clinchat/api/v1/audit?limit=1"},
                        {
                            "relation": "next",
                            "url": "https://clinchat/api/v1/audit?limit=1&after=42",
                        },
                    ],
                    "entry": [
                        {
                            "fullUrl": "https://clinchat/api/v1/audit/42",
                            "resource": _EVENT_EXAMPLE,
                            "search": {"mode": "match"},
                        }
                    ],
                }
            ]
        }
    }


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + router.prefix


@router.get(
    "",
    response_model=AuditBundle,
    response_class=FhirResponse,
    responses={422: {"description": "a filter is unknown or malformed"}, 503: {}},
)
async def search_audit(
    principal: Auditor,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    params: Annotated[AuditSearch, Query()],
) -> FhirResponse:
    filters = AuditFilters.model_validate(params.model_dump(exclude={"after", "limit"}))
    rows, more = await search(db, filters, after=params.after, limit=params.limit)
    total = await count(db, filters)
    next_url = (
        str(request.url.include_query_params(after=rows[-1].id, limit=params.limit))
        if more
        else None
    )
    body = fhir.bundle(rows, total, str(request.url), next_url, _base_url(request))
    await record(
        db,
        settings,
        "audit.read",
        principal.actor,
        entity_type="audit_event",
        detail={"filters": filters.used(), "after": params.after, "returned": len(rows)},
    )
    await db.commit()
    return FhirResponse(body)


@router.get(
    "/{event_id}",
    response_class=FhirResponse,
    responses={
        200: {"description": "a FHIR R4 AuditEvent", "content": {fhir.FHIR_JSON: {}}},
        404: {},
        503: {},
    },
)
async def read_audit_event(
    principal: Auditor,
    db: DbSession,
    settings: SettingsDep,
    event_id: Annotated[int, Path(ge=1, le=2**63 - 1)],
) -> FhirResponse:
    row = await db.get(AuditEvent, event_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such audit event")
    resource = fhir.audit_event(row)
    await record(
        db,
        settings,
        "audit.read",
        principal.actor,
        entity_type="audit_event",
        entity_id=str(event_id),
    )
    await db.commit()
    return FhirResponse(resource)
