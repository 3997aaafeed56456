"""The clinician web UI: server-rendered Jinja2 pages, static CSS and JS, no build step.

No inline script or style anywhere, so the Content-Security-Policy below holds with
``'self'`` only. Pages are in app/web/pages_*.py, templates in templates/.
"""

from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

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


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page with the signed-in principal (if any) and its CSRF token in the context."""
    principal = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else "")
    context.setdefault("idle_timeout_s", getattr(request.state, "idle_timeout_s", 0))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def install(app: FastAPI) -> None:
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
