"""Sign-in, sessions and roles.

- ``principal``: who is signed in (``Principal``) and the role checks.
- ``sessions``: server-side sessions in Redis (idle logoff, absolute lifetime, CSRF token).
- ``deps``: the FastAPI dependencies every non-public route uses.
"""
