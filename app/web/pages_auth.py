"""Sign-in pages: GET/POST /login, POST /logout, the break-glass page, and the 401 page.

Login CSRF (an attacker signing a victim in as the attacker): the login form
carries a random token that must equal the ``clinchat_login`` cookie, which is
SameSite=Strict, so a cross-site form post arrives without it. An Origin check
would not do here: our pages send ``Referrer-Policy: no-referrer``, under which
browsers send ``Origin: null`` on our own form posts.

A browser asking for an HTML page without a session gets this login form with
status 401 (``install``); JSON clients keep the JSON 401.
"""

import hmac
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Form, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.auth import service
from app.auth.deps import Clinician, CurrentPrincipal, SessionPrincipal, client_ip, session_token
from app.auth.sessions import clear_cookie, set_cookie
from app.db import DbSession
from app.errors import DependencyUnavailable
from app.settings import Settings, get_settings
from app.web import render

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)
SettingsDep = Annotated[Settings, Depends(get_settings)]

LOGIN_COOKIE = "clinchat_login"
_LOGIN_COOKIE_MAX_AGE_S = 3600


def safe_next(target: str | None) -> str:
    """Only a path on this site: no open redirect to another host."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ch in target for ch in "\r\n\\") or len(target) > 2048:
        return "/"
    return target


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/v1/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def login_page(
    request: Request,
    settings: Settings,
    status_code: int = 200,
    next_path: str = "/",
    error: str = "",
    username: str = "",
) -> HTMLResponse:
    """The login form, with the login-CSRF cookie set (kept if the browser has one)."""
    token = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        principal=None,
        csrf_token="",
        login_csrf=token,
        next=safe_next(next_path),
        error=error,
        username=username,
        idle_minutes=settings.session_idle_timeout_s // 60,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=_LOGIN_COOKIE_MAX_AGE_S,
        httponly=True,
        secure=settings.cookie_secure,
        samesite="strict",
        path="/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, settings: SettingsDep, next: str = "/") -> Response:  # noqa: A002
    return login_page(request, settings, next_path=next)


@router.post("/login", response_class=HTMLResponse)
async def login_submit(
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    username: Annotated[str, Form(max_length=256)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    next: Annotated[str, Form(max_length=2048)] = "/",  # noqa: A002
    login_csrf: Annotated[str, Form(max_length=128)] = "",
    totp: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not login_csrf or not hmac.compare_digest(cookie, login_csrf):
        return login_page(
            request,
            settings,
            status.HTTP_403_FORBIDDEN,
            next,
            "The sign-in form had expired. Please sign in again.",
        )
    if not username.strip() or not password:
        return login_page(
            request, settings, status.HTTP_400_BAD_REQUEST, next, "Enter a username and password."
        )
    code = "".join(totp.split())  # "123 456" as some apps show it
    if code and not (len(code) == 6 and code.isascii() and code.isdigit()):
        return login_page(
            request,
            settings,
            status.HTTP_400_BAD_REQUEST,
            next,
            "The authentication code has 6 digits.",
            username,
        )
    try:
        signed = await service.sign_in(
            db,
            settings,
            username,
            password,
            client_ip(request),
            session_token(request, settings),
            totp_code=code or None,
        )
    except service.SignInError as error:
        page = login_page(request, settings, error.status_code, next, error.message, username)
        if error.headers:
            page.headers.update(error.headers)
        return page
    except (DependencyUnavailable, RedisConnectionError, RedisTimeoutError) as exc:
        name = exc.name if isinstance(exc, DependencyUnavailable) else "redis"
        log.warning("sign-in page: %s unavailable", name)
        return login_page(
            request,
            settings,
            status.HTTP_503_SERVICE_UNAVAILABLE,
            next,
            f"Sign-in is unavailable: {name} cannot be reached. Try again shortly.",
            username,
        )
    response = RedirectResponse(safe_next(next), status.HTTP_303_SEE_OTHER)
    set_cookie(response, signed.token, settings)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(
    principal: CurrentPrincipal, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    await service.sign_out(db, settings, principal, session_token(request, settings))
    response = RedirectResponse("/login", status.HTTP_303_SEE_OTHER)
    clear_cookie(response, settings)
    return response


# -- break-glass ------------------------------------------------------------------------------


@router.get("/break-glass", response_class=HTMLResponse)
async def break_glass_page(
    principal: Clinician, settings: SettingsDep, request: Request
) -> Response:
    return render(
        request, "auth_break_glass.html", max_minutes=settings.break_glass_max_minutes, error=""
    )


@router.post("/break-glass", response_class=HTMLResponse)
async def break_glass_start(
    principal: Clinician,
    _: SessionPrincipal,
    request: Request,
    db: DbSession,
    settings: SettingsDep,
    reason: Annotated[str, Form(max_length=service.BREAK_GLASS_REASON_MAX)] = "",
    minutes: Annotated[int, Form(ge=1, le=24 * 60)] = 30,
) -> Response:
    error = ""
    if len(reason.strip()) < 10:
        error = "Give a reason of at least 10 characters."
    elif minutes > settings.break_glass_max_minutes:
        error = f"Choose 1 to {settings.break_glass_max_minutes} minutes."
    token = session_token(request, settings)
    if error or token is None:
        return render(
            request,
            "auth_break_glass.html",
            status_code=status.HTTP_400_BAD_REQUEST,
            max_minutes=settings.break_glass_max_minutes,
            error=error or "Break-glass needs a signed-in session.",
        )
    await service.start_break_glass(db, settings, principal, token, reason.strip(), minutes)
    return RedirectResponse("/", status.HTTP_303_SEE_OTHER)


@router.post("/break-glass/end")
async def break_glass_stop(
    principal: SessionPrincipal, request: Request, db: DbSession, settings: SettingsDep
) -> Response:
    token = session_token(request, settings)
    if token is not None:
        await service.end_break_glass(db, settings, principal, token)
    return RedirectResponse("/break-glass", status.HTTP_303_SEE_OTHER)


def install(app: FastAPI) -> None:
    """HTML errors for browsers (401: the login form; 403: a page saying so); API
    clients keep their JSON."""

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == status.HTTP_401_UNAUTHORIZED and wants_html(request):
            settings = request.app.dependency_overrides.get(get_settings, get_settings)()
            return login_page(request, settings, exc.status_code, request.url.path)
        if exc.status_code == status.HTTP_403_FORBIDDEN and wants_html(request):
            # the detail is the app's own wording (a role, a CSRF token), never user input
            return render(request, "forbidden.html", exc.status_code, detail=str(exc.detail))
        return await http_exception_handler(request, exc)
