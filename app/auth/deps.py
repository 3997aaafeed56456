"""FastAPI dependencies: the signed-in principal, role checks, CSRF.

Every route that is not public depends on ``current_principal`` (directly or via
``require_roles``). State-changing requests (anything but GET/HEAD/OPTIONS) must
carry the session's CSRF token in the ``X-CSRF-Token`` header or a
``csrf_token`` form field; SameSite=Strict cookies are the second line.
"""

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.auth.principal import Principal
from app.auth.sessions import COOKIE, SessionStore
from app.models import Role
from app.redis_client import redis_for
from app.settings import Settings, get_settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def client_ip(request: Request) -> str:
    # nginx sets X-Real-IP; the app listens on loopback only, so the header is nginx's.
    return request.headers.get("x-real-ip") or (request.client.host if request.client else "")


def session_store(settings: Annotated[Settings, Depends(get_settings)]) -> SessionStore:
    return SessionStore(redis_for(settings), settings)


async def _csrf_ok(request: Request, principal: Principal) -> bool:
    sent = request.headers.get("x-csrf-token")
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()  # Starlette caches it: the route still reads its fields
        value = form.get("csrf_token")
        sent = value if isinstance(value, str) else None
    return sent is not None and hmac.compare_digest(sent, principal.csrf_token)


async def current_principal(
    request: Request, store: Annotated[SessionStore, Depends(session_store)]
) -> Principal:
    token = request.cookies.get(COOKIE)
    principal = await store.load(token, client_ip(request)) if token else None
    if principal is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "sign-in required",
            headers={"WWW-Authenticate": 'Cookie realm="clinchat"'},
        )
    if request.method not in SAFE_METHODS and not await _csrf_ok(request, principal):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")
    request.state.principal = principal
    return principal


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through principals holding any of ``roles``."""

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.has(*roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "your role does not allow this")
        return principal

    return check


Clinician = Annotated[Principal, Depends(require_roles(Role.clinician))]
Admin = Annotated[Principal, Depends(require_roles(Role.admin))]
Auditor = Annotated[Principal, Depends(require_roles(Role.auditor))]
AdminOrAuditor = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))]
