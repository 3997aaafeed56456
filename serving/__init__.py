"""ClinChat model server: a small Llama engine behind an OpenAI-compatible API."""

__version__ = "0.1.0"
