"""The clinician web UI: server-rendered Jinja2 pages, static CSS and JS, no build step.

No inline script or style anywhere, so the Content-Security-Policy below holds with
``'self'`` only. Pages are in app/web/pages_*.py, templates in templates/.
"""

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app.kb.collections import access_for
from app.settings import Settings, get_settings

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


# The hospital's logo (CLINCHAT_BRAND_LOGO_PATH): these types, at most this size.
LOGO_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
    ".svg": "image/svg+xml",
}
LOGO_MAX_BYTES = 1024 * 1024
LOGO_URL = "/static/brand-logo"


def _settings(request: Request) -> Settings:
    """The app's settings as its routes get them (a test's override included)."""
    return request.app.dependency_overrides.get(get_settings, get_settings)()  # type: ignore[no-any-return]


def _logo(settings: Settings) -> Path | None:
    """The configured logo file, if it is there, of a known type and not too large."""
    path = settings.brand_logo_path
    if path is None or path.suffix.lower() not in LOGO_TYPES:
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None
    return path if path.is_file() and size <= LOGO_MAX_BYTES else None


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with the signed-in principal (if any), its CSRF token and the hospital's
    name and logo (settings ``brand_name``, ``brand_logo_path``) in the context."""
    principal = getattr(request.state, "principal", None)
    settings = _settings(request)
    context.setdefault("brand_name", settings.brand_name)
    context.setdefault("brand_logo", _logo(settings) is not None)
    context.setdefault("principal", principal)
    # the library's link: admins and collection managers (app/kb/collections.py)
    context.setdefault(
        "manages_documents", principal is not None and access_for(settings, principal).manages_any
    )
    context.setdefault("csrf_token", principal.csrf_token if principal else "")
    context.setdefault("idle_timeout_s", getattr(request.state, "idle_timeout_s", 0))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def install(app: FastAPI) -> None:
    # Before the static mount, which would otherwise answer for this path: public, as
    # /static is (the sign-in page shows the logo).
    @app.get(LOGO_URL, include_in_schema=False)
    async def brand_logo(request: Request) -> Response:
        """The hospital's logo; 404 when none is set or the file is not usable."""
        path = _logo(_settings(request))
        if path is None:
            return Response(status_code=404)
        return FileResponse(
            path,
            media_type=LOGO_TYPES[path.suffix.lower()],
            headers={"Cache-Control": "public, max-age=3600"},
        )

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def security_headers(request: Request, call_next):  # noqa: ANN001, ANN202
        response = await call_next(request)
        for header, value in SECURITY_HEADERS.items():
            # static files may be cached; everything else may hold PHI
            if header == "Cache-Control" and request.url.path.startswith("/static/"):
                continue
            response.headers.setdefault(header, value)
        return response
