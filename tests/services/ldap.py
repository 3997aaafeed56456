"""A private OpenLDAP directory on loopback: StartTLS required, synthetic users.

Debian's ``slapd`` with a ``slapd.conf`` generated in a temporary directory
(mdb backend, suffix ``dc=hospital,dc=test``), loaded offline with
``slapadd``, listening on ldap://127.0.0.1:<free port>. Every operation but
StartTLS itself needs TLS (``security tls=1``), anonymous binds are refused,
and only bound users may read; passwords are readable by nobody.

The people are obviously fake; each has a random password (``users``):

    uid        cn                            groups
    clin1      Dr Test Clinician             clinicians
    admin1     Test Knowledge-Base Admin     kb-admins
    audit1     Test Auditor                  auditors
    nogroup1   Test User Without Groups      (none)

As root (CI) slapd runs as the ``openldap`` system user the package creates.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.services.pki import TestPki
from tests.services.postgres import free_port
from tests.services.process import ServerProcess

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"

# uid -> (cn, sn, groups)
PEOPLE: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "clin1": ("Dr Test Clinician", "Clinician", ("clinicians",)),
    "admin1": ("Test Knowledge-Base Admin", "Admin", ("kb-admins",)),
    "audit1": ("Test Auditor", "Auditor", ("auditors",)),
    "nogroup1": ("Test User Without Groups", "Nogroup", ()),
    # departments (app/kb/collections.py): a clinician of the ICU, the ICU's librarian
    "icu1": ("Dr Test Intensivist", "Intensivist", ("clinicians", "icu-staff")),
    "icuadmin1": ("Test ICU Librarian", "Librarian", ("clinicians", "icu-librarians")),
}
GROUPS = ("clinicians", "kb-admins", "auditors", "icu-staff", "icu-librarians")


def ssha(password: str) -> str:
    """An OpenLDAP {SSHA} hash (salted SHA-1: what slappasswd writes by default)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()  # noqa: S324 (LDAP's format)
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("openldap")
    except KeyError:
        return None
    return "openldap"


@dataclass
class PrivateLdap(ServerProcess):
    root: Path
    pki: TestPki
    base_dn: str = "dc=hospital,dc=test"
    bind_password: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    users: dict[str, str] = field(
        default_factory=lambda: {uid: secrets.token_urlsafe(16) for uid in PEOPLE}, repr=False
    )
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def bind_dn(self) -> str:
        return f"cn=admin,{self.base_dn}"

    @property
    def ca_cert(self) -> Path:
        return self.pki.ca_cert

    @property
    def log_file(self) -> Path:
        return self.root / "slapd.log"

    def user_dn(self, uid: str) -> str:
        return f"uid={uid},ou=people,{self.base_dn}"

    def group_dn(self, name: str) -> str:
        return f"cn={name},ou=groups,{self.base_dn}"

    def _config(self) -> str:
        root = self.root
        return f"""
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema

pidfile {root}/slapd.pid
argsfile {root}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb

TLSCACertificateFile {root}/ca.crt
TLSCertificateFile {root}/server.crt
TLSCertificateKeyFile {root}/server.key
TLSProtocolMin 3.3
TLSVerifyClient never

security tls=1
disallow bind_anon
require authc
password-hash {{SSHA}}

database mdb
maxsize 67108864
suffix "{self.base_dn}"
rootdn "{self.bind_dn}"
rootpw {ssha(self.bind_password)}
directory {root}/data
index objectClass eq
index uid eq
index member eq

access to attrs=userPassword
  by anonymous auth
  by * none
access to *
  by users read
  by * none
"""

    def _ldif(self) -> str:
        base = self.base_dn
        entries = [
            f"dn: {base}\nobjectClass: dcObject\nobjectClass: organization\n"
            "dc: hospital\no: Test Hospital (synthetic)\n",
            f"dn: ou=people,{base}\nobjectClass: organizationalUnit\nou: people\n",
            f"dn: ou=groups,{base}\nobjectClass: organizationalUnit\nou: groups\n",
        ]
        for uid, (cn, sn, _) in PEOPLE.items():
            entries.append(
                f"dn: {self.user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\n"
                f"cn: {cn}\nsn: {sn}\nmail: {uid}@hospital.test\n"
                f"userPassword: {ssha(self.users[uid])}\n"
            )
        for group in GROUPS:
            members = "".join(
                f"member: {self.user_dn(uid)}\n"
                for uid, (_, _, groups) in PEOPLE.items()
                if group in groups
            )
            entries.append(
                f"dn: {self.group_dn(group)}\nobjectClass: groupOfNames\ncn: {group}\n{members}"
            )
        return "\n".join(entries)

    def start(self, timeout_s: float = 15) -> None:
        if not Path(SLAPD).exists():
            raise RuntimeError("slapd not installed: run `make setup` (apt: slapd)")
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        (self.root / "data").mkdir(exist_ok=True)
        for source, name in (
            (self.pki.ca_cert, "ca.crt"),
            (self.pki.server_cert, "server.crt"),
            (self.pki.server_key, "server.key"),
        ):
            shutil.copy(source, self.root / name)
        (self.root / "server.key").chmod(0o600)
        config = self.root / "slapd.conf"
        config.write_text(self._config())
        config.chmod(0o600)
        ldif = self.root / "data.ldif"
        ldif.write_text(self._ldif())
        user = _server_user()
        if user:
            for path in (self.root, *self.root.rglob("*")):
                shutil.chown(path, user, user)
        as_user = {"user": user, "group": user, "extra_groups": [] if user else None}
        subprocess.run(  # noqa: S603
            [SLAPADD, "-q", "-f", str(config), "-l", str(ldif)],
            check=True,
            capture_output=True,
            **as_user,  # type: ignore[arg-type]
        )
        ldif.unlink()
        with self.log_file.open("wb") as log:
            # -d 0: stay in the foreground (no fork), log nothing but errors
            self.process = subprocess.Popen(  # noqa: S603
                [SLAPD, "-d", "0", "-f", str(config), "-h", f"{self.url}/"],
                stdout=log,
                stderr=subprocess.STDOUT,
                **as_user,  # type: ignore[arg-type]
            )
        deadline = time.monotonic() + timeout_s
        while not self.is_running():
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited: {self.log_file.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"slapd did not listen in {timeout_s} s")
            time.sleep(0.05)
