"""LDAP / Active Directory sign-in (ldap3).

1. bind as the service account (``ldap_bind_dn``), over StartTLS or ldaps://, the
   server's certificate verified against ``ldap_ca_cert``;
2. find the user with ``ldap_user_filter`` (the username escaped: no filter injection);
3. bind as the user's DN with the given password (an empty password would be an
   anonymous bind that "succeeds", so it is refused before);
4. read the user's groups (``ldap_group_filter`` under ``ldap_group_base``) and map
   them to roles with ``ldap_role_groups`` (DNs compared case-insensitively).

ldap3 blocks, so ``authenticate`` runs in a worker thread. A directory that cannot
be reached, refuses TLS or refuses the service account raises
DependencyUnavailable("ldap"): the client gets 503 naming it.
"""

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import anyio.to_thread
from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPException, LDAPSASLPrepError
from ldap3.utils.conv import escape_filter_chars

from app.crypto import KeysUnavailable
from app.errors import DependencyUnavailable
from app.models import Role
from app.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
RECEIVE_TIMEOUT_S = 10


@dataclass(frozen=True)
class DirectoryUser:
    """A user the directory knows; ``authenticated`` says whether the password was right."""

    username: str
    dn: str
    display_name: str
    groups: tuple[str, ...]
    authenticated: bool = True


def normalise_dn(dn: str) -> str:
    """Lower case, no blanks around the RDN separators: 'CN=A, OU=B' == 'cn=a,ou=b'."""
    return ",".join(part.strip() for part in dn.split(",")).lower()


def roles_for(settings: Settings, groups: tuple[str, ...]) -> set[Role]:
    """The ClinChat roles the groups map to; groups not in ``ldap_role_groups`` count nothing."""
    known = {role.value for role in Role}
    mapping = {normalise_dn(dn): role for dn, role in settings.ldap_role_groups.items()}
    roles: set[Role] = set()
    for group in groups:
        role = mapping.get(normalise_dn(group))
        if role in known:
            roles.add(Role(role))
        elif role is not None:
            log.warning("ldap_role_groups maps a group to an unknown role")
    return roles


def _server(settings: Settings) -> Server:
    host = urlsplit(settings.ldap_url).hostname or ""
    tls = Tls(
        validate=ssl.CERT_REQUIRED,
        ca_certs_file=settings.ldap_ca_cert or None,
        sni=host,
    )
    return Server(settings.ldap_url, tls=tls, get_info=NONE, connect_timeout=CONNECT_TIMEOUT_S)


def _open(settings: Settings, server: Server, user: str, password: str) -> Connection:
    """An open, TLS-protected, not yet bound connection."""
    conn = Connection(
        server,
        user=user,
        password=password,
        receive_timeout=RECEIVE_TIMEOUT_S,
        raise_exceptions=False,
        read_only=True,
        auto_referrals=False,
    )
    conn.open()
    if not server.ssl:
        if not settings.ldap_starttls:
            conn.unbind()
            # Passwords in clear on the wire: refuse, whatever the settings say.
            raise DependencyUnavailable("ldap", "not configured for TLS")
        if not conn.start_tls():
            conn.unbind()
            raise DependencyUnavailable("ldap", "refusing StartTLS")
    return conn


def _entries(conn: Connection) -> list[dict]:
    return [entry for entry in conn.response or [] if entry.get("type") == "searchResEntry"]


def _first(value: object) -> str:
    if isinstance(value, list | tuple):
        return str(value[0]) if value else ""
    return "" if value is None else str(value)


def bind_password(settings: Settings) -> str:
    """The service account's password: the app's secret ``ldap_bind_password`` in
    Vault's KV store with ``secrets_in_vault`` (how the deployment keeps it), else
    the setting."""
    if not settings.secrets_in_vault or not settings.ldap_bind_dn:
        return settings.ldap_bind_password.get_secret_value()
    from app.vault_keys import app_secret

    try:
        return app_secret(settings, "ldap_bind_password")
    except KeysUnavailable as exc:
        log.warning("ldap: no bind password from vault (%s)", exc)
        raise DependencyUnavailable("vault") from exc


@contextmanager
def _service_account(settings: Settings) -> Iterator[Connection]:
    """A connection bound as the service account, unbound afterwards. ldap3 and
    socket errors inside become DependencyUnavailable("ldap")."""
    server = _server(settings)
    service: Connection | None = None
    try:
        service = _open(settings, server, settings.ldap_bind_dn, bind_password(settings))
        if not service.bind():
            raise DependencyUnavailable("ldap", "refusing the service account")
        yield service
    except (LDAPException, OSError) as exc:
        # The exception text may echo the DN or filter: log its type only.
        log.warning("ldap: %s", type(exc).__name__)
        raise DependencyUnavailable("ldap") from None
    finally:
        if service is not None:
            try:
                service.unbind()
            except (LDAPException, OSError):
                pass


def _find_user(service: Connection, settings: Settings, username: str) -> list[dict]:
    """The entries ``ldap_user_filter`` finds for ``username`` (at most two: enough to
    tell an ambiguous name)."""
    search_filter = settings.ldap_user_filter.format(username=escape_filter_chars(username))
    service.search(
        settings.ldap_user_base, search_filter, SUBTREE,
        attributes=[settings.ldap_display_name_attr], size_limit=2,
    )  # fmt: skip
    return _entries(service)


def _display_name(settings: Settings, entry: dict) -> str:
    return _first(entry.get("attributes", {}).get(settings.ldap_display_name_attr))[:256]


def _groups(service: Connection, settings: Settings, dn: str) -> tuple[str, ...]:
    group_filter = settings.ldap_group_filter.format(user_dn=escape_filter_chars(dn))
    service.search(settings.ldap_group_base, group_filter, SUBTREE, attributes=[])
    return tuple(str(entry["dn"]) for entry in _entries(service))


def authenticate(settings: Settings, username: str, password: str) -> DirectoryUser | None:
    """The directory's user (``authenticated`` False for a wrong password); None if unknown.

    Blocking: call ``authenticate_async`` from the event loop.
    """
    if not settings.ldap_url:
        return None
    if not username:
        return None
    with _service_account(settings) as service:
        found = _find_user(service, settings, username)
        if len(found) != 1:  # unknown, or ambiguous: never guess which one
            return None
        dn = str(found[0]["dn"])
        display_name = _display_name(settings, found[0])
        canonical = username.strip().lower()

        if not password:  # an empty password is an anonymous bind, which "succeeds"
            return DirectoryUser(canonical, dn, display_name, (), authenticated=False)
        user_conn = _open(settings, service.server, dn, password)
        try:
            if not user_conn.bind():
                return DirectoryUser(canonical, dn, display_name, (), authenticated=False)
        except LDAPSASLPrepError:
            # SASLprep (RFC 4013) refuses control, private-use and bidi characters, so
            # no directory password holds them: a wrong password, not an outage (which
            # anyone could fake, and which would not count toward lockout).
            return DirectoryUser(canonical, dn, display_name, (), authenticated=False)
        finally:
            user_conn.unbind()
        return DirectoryUser(canonical, dn, display_name, _groups(service, settings, dn))


async def authenticate_async(
    settings: Settings, username: str, password: str
) -> DirectoryUser | None:
    return await anyio.to_thread.run_sync(authenticate, settings, username, password)


# -- the directory sync (app/auth/lifecycle.py) --------------------------------------------------

AMBIGUOUS = "ambiguous"
# Result codes of a search that answered: success, and a size limit hit by an ambiguous filter.
_SEARCH_ANSWERED = (0, 4)


def lookup_many(settings: Settings, usernames: list[str]) -> dict[str, DirectoryUser | str | None]:
    """Each username's entry and groups as the service account sees them (no password):
    a DirectoryUser, None when the directory has no such person, or AMBIGUOUS.

    One connection for all. A search the directory does not answer (wrong base, no
    permission, a timeout) raises DependencyUnavailable: an outage must never read as
    "everyone left". Blocking: run it in a thread.
    """
    if not settings.ldap_url:
        raise DependencyUnavailable("ldap", "not configured")
    found: dict[str, DirectoryUser | str | None] = {}
    with _service_account(settings) as service:
        for username in usernames:
            entries = _find_user(service, settings, username)
            if (service.result or {}).get("result") not in _SEARCH_ANSWERED:
                raise DependencyUnavailable("ldap", "refusing a search")
            if len(entries) != 1:
                found[username] = AMBIGUOUS if entries else None
                continue
            dn = str(entries[0]["dn"])
            groups = _groups(service, settings, dn)
            if (service.result or {}).get("result") != 0:
                raise DependencyUnavailable("ldap", "refusing a group search")
            found[username] = DirectoryUser(
                username, dn, _display_name(settings, entries[0]), groups
            )
    return found
