"""Who is signed in, as every route sees it."""

import time
import uuid
from dataclasses import dataclass

from app.audit.chain import Actor
from app.models import Role


@dataclass(frozen=True)
class Principal:
    user_id: uuid.UUID
    username: str
    display_name: str
    roles: frozenset[Role]
    session_id: str  # the hash of the cookie, never the cookie itself
    csrf_token: str
    source_ip: str = ""
    # Break-glass: emergency access to every conversation, flagged in the audit trail.
    break_glass_until: float = 0.0
    # An API token's scopes (app/auth/tokens.py); None: a browser session, which has all.
    scopes: frozenset[str] | None = None
    # Directory group DNs (normalised): they decide the collections read and managed
    # (app/kb/collections.py). Local accounts have none.
    groups: frozenset[str] = frozenset()

    @property
    def break_glass(self) -> bool:
        return self.break_glass_until > time.time()

    def has(self, *roles: Role) -> bool:
        return bool(self.roles.intersection(roles))

    @property
    def actor(self) -> Actor:
        return Actor(
            username=self.username,
            roles=tuple(sorted(self.roles)),
            break_glass=self.break_glass,
            source_ip=self.source_ip,
        )
