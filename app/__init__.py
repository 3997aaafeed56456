"""ClinChat clinical assistant backend (FastAPI)."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("clinchat-appliance")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
