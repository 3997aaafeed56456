"""The ASGI application: ``app.main:app`` (run by gunicorn with uvicorn workers).

Routers: one per resource in app/routers/ (JSON API under /api/v1, the
OpenAI-compatible facade under /v1) and the server-rendered pages in app/web/.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import __version__, db, errors, redis_client, web
from app.admission import Admission
from app.metrics import record
from app.phi.logging import JsonFormatter, PhiRedactingFilter
from app.routers import audit as audit_api
from app.routers import auth as auth_api
from app.routers import chat as chat_api
from app.routers import documents as documents_api
from app.routers import feedback as feedback_api
from app.routers import health, openai_facade
from app.routers import phi as phi_api
from app.web import pages_audit, pages_auth, pages_chat, pages_documents, pages_feedback


def configure_logging() -> None:
    """Every log line is JSON and passes the PHI redaction filter (app/phi/logging.py)."""
    handler = logging.StreamHandler()
    handler.addFilter(PhiRedactingFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # The access log would carry query strings; requests are counted in /metrics instead.
    logging.getLogger("uvicorn.access").disabled = True


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    configure_logging()
    yield
    await db.dispose_all()
    await redis_client.close_all()


app = FastAPI(
    title="ClinChat",
    version=__version__,
    docs_url=None,
    redoc_url=None,
    lifespan=lifespan,
)
app.middleware("http")(record)
app.add_middleware(Admission)  # outermost: a refused question takes nothing
web.install(app)
errors.install(app)
app.include_router(health.router)
pages_auth.install(app)
app.include_router(auth_api.router)
app.include_router(auth_api.tokens_router)
app.include_router(pages_auth.router)
app.include_router(documents_api.router)
app.include_router(documents_api.chunks_router)
app.include_router(pages_documents.router)
app.include_router(chat_api.router)
app.include_router(openai_facade.router)
app.include_router(pages_chat.router)
app.include_router(feedback_api.answers_router)
app.include_router(feedback_api.router)
app.include_router(pages_feedback.router)
app.include_router(audit_api.router)
app.include_router(pages_audit.router)
app.include_router(phi_api.router)
