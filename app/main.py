"""The ASGI application: ``app.main:app`` (run by gunicorn with uvicorn workers)."""

from fastapi import FastAPI

from app import __version__
from app.metrics import record
from app.routers import health

app = FastAPI(title="ClinChat", version=__version__, docs_url=None, redoc_url=None)
app.middleware("http")(record)
app.include_router(health.router)
