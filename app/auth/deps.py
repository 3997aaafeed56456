"""FastAPI dependencies: the signed-in principal, role checks, CSRF.

Every route that is not public depends on ``current_principal`` (directly or via
``require_roles``). A principal comes from the session cookie or from a personal
API token (``Authorization: Bearer cc_...``, app/auth/tokens.py).

State-changing requests (anything but GET/HEAD/OPTIONS) with a session cookie must
carry the session's CSRF token in the ``X-CSRF-Token`` header or a ``csrf_token``
form field; SameSite=Strict cookies are the second line. Bearer requests need no
CSRF token: a browser never adds an Authorization header on its own. A request
carrying both a session and a token of another user is refused.
"""

import hmac
import os
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from app.auth import tokens
from app.auth.lifecycle import user_active
from app.auth.principal import Principal
from app.auth.sessions import SessionStore, cookie_name
from app.db import sessionmaker
from app.kb.collections import access_for
from app.models import Role
from app.redis_client import redis_for
from app.settings import Settings, get_settings

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def trusted_proxies() -> frozenset[str]:
    """Peers whose X-Real-IP is believed: nginx. FORWARDED_ALLOW_IPS is gunicorn's
    own setting (roles/app writes loopback and the web hosts' addresses there)."""
    given = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    return frozenset(address.strip() for address in given.split(",") if address.strip())


def client_ip(request: Request) -> str:
    """The client's address: nginx's X-Real-IP when nginx sent the request, else
    the peer's own (a client that reaches the app directly cannot choose the
    address its sign-in failures are counted against)."""
    peer = request.client.host if request.client else ""
    if peer in trusted_proxies():
        return request.headers.get("x-real-ip") or peer
    return peer


async def session_store(settings: Annotated[Settings, Depends(get_settings)]) -> SessionStore:
    # async: a sync dependency runs in a thread, away from the loop its connection needs
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


def bearer_token(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, if there is one."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def session_token(request: Request, settings: Settings) -> str | None:
    """The session cookie's value; over HTTPS only the __Host- name counts."""
    return request.cookies.get(cookie_name(settings)) or None


def is_bearer(principal: Principal) -> bool:
    return principal.session_id.startswith("token:")


def _unauthorized(detail: str, scheme: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED,
        detail,
        headers={"WWW-Authenticate": f'{scheme} realm="clinchat"'},
    )


async def _bearer_principal(
    request: Request, secret: str, store: SessionStore, settings: Settings
) -> Principal:
    # A session of its own, not the route's: the route's transaction stays the route's.
    async with sessionmaker(settings)() as db:
        principal = await tokens.principal_for(db, secret, client_ip(request))
    if principal is None:
        raise _unauthorized("invalid, expired or revoked token", "Bearer")
    cookie = session_token(request, settings)
    if cookie:
        other = await store.load(cookie, client_ip(request))
        if other is not None and other.user_id != principal.user_id:
            raise _unauthorized("the session and the token belong to different users", "Bearer")
    return principal


async def current_principal(
    request: Request,
    store: Annotated[SessionStore, Depends(session_store)],
    settings: Annotated[Settings, Depends(get_settings)],
) -> Principal:
    secret = bearer_token(request)
    if secret is not None:
        principal = await _bearer_principal(request, secret, store, settings)
        request.state.principal = principal
        return principal
    token = session_token(request, settings)
    if token is None or (session := await store.load(token, client_ip(request))) is None:
        raise _unauthorized("sign-in required", "Cookie")
    if not await user_active(settings, session.user_id):  # disabled since the sign-in
        await store.destroy(token)
        raise _unauthorized("this account is disabled", "Cookie")
    if request.method not in SAFE_METHODS and not await _csrf_ok(request, session):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")
    request.state.principal = session
    # pages clear themselves when the server would have signed the session out
    request.state.idle_timeout_s = settings.session_idle_timeout_s
    return session


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


async def session_principal(principal: CurrentPrincipal) -> Principal:
    """The principal of a browser session: some acts are not for API tokens."""
    if is_bearer(principal):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "this needs a signed-in session, not an API token"
        )
    return principal


SessionPrincipal = Annotated[Principal, Depends(session_principal)]


def require_roles(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency that lets through principals holding any of ``roles``.

    The check carries ``roles`` as an attribute, so tests can find every route's
    required roles by walking the dependency tree (tests/app/test_routes_protected.py).
    """

    async def check(principal: CurrentPrincipal) -> Principal:
        if not principal.has(*roles):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "your role does not allow this")
        return principal

    check.roles = frozenset(roles)  # type: ignore[attr-defined]
    return check


def require_scope(scope: str) -> Callable[..., Awaitable[None]]:
    """A router dependency: an API token must carry ``scope`` (sessions have every scope).

    Like require_roles, the check carries its ``scope`` for the route walk in
    tests/app/test_routes_protected.py.
    """

    async def check(principal: CurrentPrincipal) -> None:
        if principal.scopes is not None and scope not in principal.scopes:
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, f"this API token does not have the {scope} scope"
            )

    check.scope = scope  # type: ignore[attr-defined]
    return check


def require_librarian(*also: Role) -> Callable[..., Awaitable[Principal]]:
    """Admins, and anyone who manages a collection (app/kb/collections.py), and ``also``.

    Like require_roles, the check carries the roles it lets through by role (admin and
    ``also``); a collection manager passes by a directory group instead, and each route
    then keeps to the documents of the collections managed.
    """

    async def check(
        principal: CurrentPrincipal, settings: Annotated[Settings, Depends(get_settings)]
    ) -> Principal:
        if not (principal.has(*also) or access_for(settings, principal).manages_any):
            raise HTTPException(status.HTTP_403_FORBIDDEN, "your role does not allow this")
        return principal

    check.roles = frozenset({Role.admin, *also})  # type: ignore[attr-defined]
    return check


Clinician = Annotated[Principal, Depends(require_roles(Role.clinician))]
Admin = Annotated[Principal, Depends(require_roles(Role.admin))]
Auditor = Annotated[Principal, Depends(require_roles(Role.auditor))]
AdminOrAuditor = Annotated[Principal, Depends(require_roles(Role.admin, Role.auditor))]
# the knowledge base's documents: admins, collection managers (theirs only), auditors (read)
Librarian = Annotated[Principal, Depends(require_librarian())]
LibrarianOrAuditor = Annotated[Principal, Depends(require_librarian(Role.auditor))]
