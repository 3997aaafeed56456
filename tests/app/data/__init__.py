"""Synthetic test documents, generated in code (kbdocs.py): no real patient data anywhere."""
