"""``scram_sha256``: a PostgreSQL role's password as the SCRAM-SHA-256 verifier the server
stores, so that the plaintext is never in an SQL statement (pgaudit logs role changes:
roles/postgresql/README.md).

    password: "{{ postgresql_app_password | clinchat.appliance.scram_sha256('clinchat_app') }}"

The salt is derived from the password and the role's name (HMAC-SHA-256), not random:
the same password gives the same verifier, so community.postgresql.postgresql_user
compares it with pg_authid and a second run changes nothing. A salt still differs per
role and per password, which is what it is for (no precomputation across them).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from ansible.errors import AnsibleFilterError

ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_BYTES = 16  # as PostgreSQL's own


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scram_sha256(password: str, role: str) -> str:
    """``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (RFC 5802, RFC 7677)."""
    if not isinstance(password, str) or not password:
        raise AnsibleFilterError("scram_sha256: the password is empty")
    # PostgreSQL applies SASLprep to the password, which leaves printable ASCII as it is;
    # other characters would need it here too, so they are refused rather than guessed.
    if not all(" " <= ch <= "~" for ch in password):
        raise AnsibleFilterError(
            f"scram_sha256: the password of role {role} must be printable ASCII"
        )
    secret = password.encode("ascii")
    salt = hmac.new(secret, b"clinchat-scram-salt\0" + role.encode(), hashlib.sha256).digest()
    salt = salt[:SALT_BYTES]
    salted = hashlib.pbkdf2_hmac("sha256", secret, salt, ITERATIONS)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${ITERATIONS}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"scram_sha256": scram_sha256}
