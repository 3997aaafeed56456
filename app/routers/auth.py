"""Sign-in API: sessions (/api/v1/auth/...), break-glass and personal API tokens.

``POST /api/v1/auth/login`` is public. Login CSRF cannot reach it: it takes JSON
only (FastAPI refuses other content types), which a cross-site form cannot send.
Everything else needs a principal; state-changing calls with a cookie need the
session's CSRF token (app/auth/deps.py).
"""

import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from app.audit import record
from app.auth import service, tokens
from app.auth.deps import (
    Clinician,
    CurrentPrincipal,
    SessionPrincipal,
    client_ip,
    session_token,
)
from app.auth.principal import Principal
from app.auth.sessions import clear_cookie, set_cookie
from app.db import DbSession
from app.settings import Settings, get_settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
tokens_router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])

SettingsDep = Annotated[Settings, Depends(get_settings)]


class LoginRequest(BaseModel):
    # no control characters: PostgreSQL refuses NUL, and no real username has one
    username: str = Field(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")
    password: str = Field(min_length=1, max_length=1024)
    totp: str | None = Field(
        None,
        pattern=r"^[0-9]{6}$",
        description="the 6-digit authentication code (TOTP) of a local account; "
        "directory accounts leave it out",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {"username": "clin1", "password": "synthetic-pass"},
                {"username": "breakglass1", "password": "synthetic-pass", "totp": "287082"},
            ]
        }
    }


class Me(BaseModel):
    username: str
    display_name: str
    roles: list[str]
    break_glass: bool
    break_glass_until: datetime | None
    csrf_token: str = Field(description="send it as X-CSRF-Token on state-changing calls")
    via_token: bool = Field(description="signed in with an API token, not a session")

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "username": "clin1",
                    "display_name": "Test Clinician One",
                    "roles": ["clinician"],
                    "break_glass": False,
                    "break_glass_until": None,
                    "csrf_token": "kq3...",
                    "via_token": False,
                }
            ]
        }
    }

    @classmethod
    def of(cls, principal: Principal) -> "Me":
        active = principal.break_glass
        return cls(
            username=principal.username,
            display_name=principal.display_name,
            roles=sorted(principal.roles),
            break_glass=active,
            break_glass_until=(
                datetime.fromtimestamp(principal.break_glass_until, UTC) if active else None
            ),
            csrf_token=principal.csrf_token,
            via_token=principal.session_id.startswith("token:"),
        )


class BreakGlassRequest(BaseModel):
    reason: str = Field(
        min_length=10,
        max_length=service.BREAK_GLASS_REASON_MAX,
        description="why emergency access is needed; recorded PHI-redacted",
    )
    minutes: int = Field(ge=1, description="1 .. CLINCHAT_BREAK_GLASS_MAX_MINUTES")

    model_config = {
        "json_schema_extra": {
            "examples": [{"reason": "covering ward 7 overnight, urgent handover", "minutes": 30}]
        }
    }


class BreakGlassState(BaseModel):
    break_glass: bool
    break_glass_until: datetime | None

    model_config = {
        "json_schema_extra": {
            "examples": [{"break_glass": True, "break_glass_until": "2026-11-23T03:30:00Z"}]
        }
    }


def _unauthorized_error(error: service.SignInError) -> HTTPException:
    return HTTPException(error.status_code, error.message, headers=error.headers)


@router.post("/login", response_model=Me, responses={401: {}, 403: {}, 429: {}, 503: {}})
async def login(
    body: LoginRequest, request: Request, response: Response, db: DbSession, settings: SettingsDep
) -> Me:
    """Sign in with a directory or local account; sets the session cookie.

    A local account also sends ``totp``, the code of its authenticator app: without
    it 401 "second factor required" (not counted toward the lockout); a wrong or
    already used code is 401 and counts like a wrong password."""
    try:
        signed = await service.sign_in(
            db,
            settings,
            body.username,
            body.password,
            client_ip(request),
            session_token(request, settings),
            totp_code=body.totp,
        )
    except service.SignInError as error:
        raise _unauthorized_error(error) from None
    set_cookie(response, signed.token, settings)
    return Me.of(signed.principal)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(
    principal: CurrentPrincipal, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    """End the session (an API token stays valid: revoke it with DELETE /api/v1/tokens/{id})."""
    await service.sign_out(db, settings, principal, session_token(request, settings))
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    clear_cookie(response, settings)
    return response


@router.get("/me", response_model=Me)
async def me(principal: CurrentPrincipal) -> Me:
    """Who is signed in, with the CSRF token the page's scripts send."""
    return Me.of(principal)


@router.post("/break-glass", response_model=BreakGlassState)
async def break_glass(
    body: BreakGlassRequest,
    principal: Clinician,
    _: SessionPrincipal,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
) -> BreakGlassState:
    """Emergency access for a limited time; every audit row meanwhile is flagged."""
    if body.minutes > settings.break_glass_max_minutes:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"minutes must be 1..{settings.break_glass_max_minutes}",
        )
    token = session_token(request, settings)
    assert token is not None  # SessionPrincipal: the cookie is there
    until = await service.start_break_glass(
        db, settings, principal, token, body.reason, body.minutes
    )
    return BreakGlassState(break_glass=True, break_glass_until=datetime.fromtimestamp(until, UTC))


@router.post("/break-glass/end", response_model=BreakGlassState)
async def break_glass_end(
    principal: SessionPrincipal, request: Request, db: DbSession, settings: SettingsDep
) -> BreakGlassState:
    token = session_token(request, settings)
    assert token is not None
    await service.end_break_glass(db, settings, principal, token)
    return BreakGlassState(break_glass=False, break_glass_until=None)


# -- personal API tokens --------------------------------------------------------------------


class TokenRequest(BaseModel):
    name: str = Field(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9 ._-]+$",
        description="a label to recognise the token by (letters, digits, space . _ -)",
    )
    days: int = Field(30, ge=1, le=tokens.MAX_DAYS, description="lifetime, at most 90 days")
    scopes: list[tokens.Scope] = Field(
        list(tokens.DEFAULT_SCOPES),
        min_length=1,
        description="what the token may call: chat, facade, detect, documents, audit, feedback",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [{"name": "ward laptop script", "days": 30, "scopes": ["facade"]}]
        }
    }


class TokenInfo(BaseModel):
    id: uuid.UUID
    name: str
    roles: list[str]
    scopes: list[str]
    created_at: datetime | None
    expires_at: datetime
    last_used_at: datetime | None

    model_config = {
        "from_attributes": True,
        "json_schema_extra": {
            "examples": [
                {
                    "id": "5b3c0e0e-4a53-4d1c-9a8f-0c6a3a1f2b11",
                    "name": "ward laptop script",
                    "roles": ["clinician"],
                    "scopes": ["facade"],
                    "created_at": "2026-11-23T09:00:00Z",
                    "expires_at": "2026-12-23T09:00:00Z",
                    "last_used_at": None,
                }
            ]
        },
    }


class TokenCreated(TokenInfo):
    token: str = Field(description="shown once: only its SHA-256 is kept")


@tokens_router.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED)
async def create_token(
    body: TokenRequest, principal: SessionPrincipal, db: DbSession, settings: SettingsDep
) -> TokenCreated:
    """A personal API token holding your current roles (an API token cannot make another)."""
    secret, row = await tokens.issue(
        db, principal.user_id, principal.roles, body.name, body.days, tuple(body.scopes)
    )
    await record(
        db,
        settings,
        "token.create",
        principal.actor,
        entity_type="api_token",
        entity_id=row.id,
        detail={"days": body.days, "roles": row.roles, "scopes": row.scopes},
    )
    await db.commit()
    return TokenCreated(
        id=row.id,
        name=row.name,
        roles=row.roles,
        scopes=row.scopes,
        created_at=row.created_at,
        expires_at=row.expires_at,
        last_used_at=None,
        token=secret,
    )


@tokens_router.get("", response_model=list[TokenInfo])
async def list_tokens(principal: CurrentPrincipal, db: DbSession) -> list[TokenInfo]:
    """Your tokens that are neither revoked nor expired (never their secrets)."""
    return [TokenInfo.model_validate(row) for row in await tokens.list_for(db, principal.user_id)]


@tokens_router.delete("/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(
    token_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession, settings: SettingsDep
) -> Response:
    row = await tokens.revoke(db, principal.user_id, token_id)
    if row is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such token")
    await record(
        db, settings, "token.revoke", principal.actor, entity_type="api_token", entity_id=row.id
    )
    await db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
