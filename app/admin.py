"""``clinchat-admin``: the operator's command line.

    clinchat-admin migrate                      schema migrations (as the schema owner)
    clinchat-admin create-user NAME --role admin [--role ...] [--password-file FILE] [--totp]
    clinchat-admin totp enrol NAME              a local account's second factor (shown once)
    clinchat-admin totp reset NAME              remove it (then no sign-in until enrolled again)
    clinchat-admin ingest DIR [--now]           add every supported file as a document
    clinchat-admin audit verify [--max-checkpoint-age S]  walk the chain, check its checkpoints
    clinchat-admin audit checkpoint             sign a checkpoint of the chain now
    clinchat-admin reindex                      re-embed every searchable chunk
    clinchat-admin rewrap                       re-encrypt every encrypted value (key rotation)
    clinchat-admin worker                       the ingestion worker (as app.kb.worker)
    clinchat-admin vault-unwrap                 trade the wrapped AppRole secret id (unit start)
    clinchat-admin users list                   every user, source, roles, disabled
    clinchat-admin users disable NAME [--reason R]  disable, revoke tokens, end sessions
    clinchat-admin users enable NAME            enable again (an admin's decision)
    clinchat-admin users end-sessions NAME      sign the user out everywhere
    clinchat-admin users revoke-tokens NAME     revoke every API token of the user
    clinchat-admin users sync [NAME ...] [--force]  disable directory leavers now

Settings come from the environment and credentials exactly as the service's do
(app/settings.py). An expected failure is one line on stderr and an exit status,
never a traceback: 1 the check failed (a broken audit chain, a refused file), 2 bad
input (a weak password, an unknown role, invalid settings), 3 a dependency is down
(the line names it).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar

import psycopg
import redis.exceptions
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError

from app.audit import AuditUnavailable
from app.crypto import KeysUnavailable
from app.errors import DependencyUnavailable
from app.models import Role
from app.settings import Settings, get_settings

if TYPE_CHECKING:
    from app.audit.chain import Verdict

OK, CHECK_FAILED, BAD_INPUT, UNAVAILABLE = 0, 1, 2, 3
T = TypeVar("T")


class Failed(Exception):
    """An expected failure: ``message`` is the one line printed, ``code`` the exit status."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _dependency(exc: BaseException) -> str | None:
    """The name of the dependency an exception says is down, if it says one is."""
    for error in (exc, exc.__cause__):
        if isinstance(error, DependencyUnavailable):
            return error.name
        if isinstance(error, KeysUnavailable):
            return "vault"
        if isinstance(error, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
            return "redis"
        if isinstance(error, OperationalError | psycopg.OperationalError):
            return "database"
        if isinstance(error, DBAPIError) and error.connection_invalidated:
            return "database"
    return None


def _run(settings: Settings, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` on a fresh event loop, closing the pools it opened."""

    async def main() -> T:
        from app import db, redis_client

        try:
            return await work()
        finally:
            await db.dispose_all()
            await redis_client.close_all()

    return asyncio.run(main())


# -- the commands ------------------------------------------------------------------------------


def migrate(settings: Settings, _: argparse.Namespace) -> int:
    from alembic.script import ScriptDirectory

    from app import migrate as migrations

    migrations.upgrade(settings)
    # the app's role cannot read alembic_version: the head is where upgrade() left it
    head = ScriptDirectory.from_config(migrations.alembic_config(settings)).get_current_head()
    print(f"ok: database at revision {head}")
    return OK


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file:
        from_stdin = args.password_file == "-"  # noqa: S105 -- a file name, not a password
        try:
            text = sys.stdin.read() if from_stdin else Path(args.password_file).read_text()
        except OSError as exc:
            raise Failed(f"cannot read the password file ({exc.strerror})", BAD_INPUT) from exc
        return text.rstrip("\r\n")  # a file usually ends with a newline; the password does not
    first = getpass.getpass(f"Password for {args.username}: ")
    if getpass.getpass("Again: ") != first:
        raise Failed("the passwords differ", BAD_INPUT)
    return first


def _print_enrolment(username: str, secret: bytes) -> None:
    """The secret, once: the operator puts it in the account holder's authenticator app."""
    from app.auth import totp

    print(f"second factor (TOTP) of {username}, shown once: add it to an authenticator app now")
    print(f"secret: {totp.base32(secret)}")
    print(f"uri: {totp.otpauth_uri(username, secret)}")


def create_user(settings: Settings, args: argparse.Namespace) -> int:
    from app.auth import totp
    from app.auth.local import PasswordPolicyError, create_local_user
    from app.db import sessionmaker
    from app.kb.worker import ADMIN_CLI

    password = _read_password(args)

    async def work() -> tuple[str, bytes | None]:
        async with sessionmaker(settings)() as session:
            user = await create_local_user(
                session, args.username, password, args.role, settings=settings
            )
            secret = await totp.enrol(session, settings, user, ADMIN_CLI) if args.totp else None
            return str(user.id), secret

    try:
        user_id, secret = _run(settings, work)
    except PasswordPolicyError as exc:
        raise Failed(str(exc), BAD_INPUT) from exc
    print(f"ok: local user {args.username.strip()} ({', '.join(sorted(set(args.role)))}) {user_id}")
    if secret is not None:
        _print_enrolment(args.username.strip(), secret)
    elif settings.totp_required:
        print(
            f"note: it signs in only once its second factor is enrolled: "
            f"clinchat-admin totp enrol {args.username.strip()}"
        )
    return OK


def totp_factor(settings: Settings, args: argparse.Namespace) -> int:
    """``totp enrol|reset NAME``: a local account's second factor, audited as clinchat-admin."""
    from sqlalchemy import func, select

    from app.auth import totp
    from app.db import sessionmaker
    from app.kb.worker import ADMIN_CLI
    from app.models import User

    async def work() -> tuple[str, bytes | None, bool]:
        async with sessionmaker(settings)() as db:
            name = args.name.strip()
            user = await db.scalar(
                select(User).where(
                    func.lower(User.username) == name.lower(), User.source == "local"
                )
            )
            if user is None:
                other = await db.scalar(
                    select(User.id).where(func.lower(User.username) == name.lower())
                )
                if other is not None:
                    raise Failed(
                        f"{name} is a directory account: its second factor is the directory's",
                        BAD_INPUT,
                    )
                raise Failed(f"no local user {name!r}", BAD_INPUT)
            if args.totp_command == "reset":
                return user.username, None, await totp.reset(db, settings, user, ADMIN_CLI)
            if user.totp_secret_enc is not None:
                raise Failed(
                    f"{user.username} already has a second factor; to replace it: "
                    f"clinchat-admin totp reset {user.username}, then enrol",
                    BAD_INPUT,
                )
            return user.username, await totp.enrol(db, settings, user, ADMIN_CLI), True

    username, secret, had = _run(settings, work)
    if secret is not None:
        print(f"ok: second factor enrolled for {username}")
        _print_enrolment(username, secret)
    elif had:
        print(f"ok: second factor of {username} removed; it signs in again once enrolled")
    else:
        print(f"ok: {username} had no second factor")
    return OK


def ingest(settings: Settings, args: argparse.Namespace) -> int:
    from app.kb.worker import ADMIN_CLI, ingest_path

    try:
        results = _run(
            settings, lambda: ingest_path(settings, args.path, ADMIN_CLI, process=args.now)
        )
    except FileNotFoundError as exc:
        raise Failed(str(exc), BAD_INPUT) from exc
    bad = 0
    for result in results:
        fields = [result.outcome, result.path, str(result.document_id or "-")]
        if result.message:
            fields.append(result.message)
        print(" ".join(fields))
        bad += result.outcome in ("refused", "failed", "retry")
    print(f"ingested {len(results) - bad} of {len(results)} files")
    return CHECK_FAILED if bad else OK


def audit_verify(settings: Settings, args: argparse.Namespace) -> int:
    from app.audit.chain import verify
    from app.db import sessionmaker

    async def work() -> Verdict:
        async with sessionmaker(settings)() as session:
            return await verify(session, settings)

    verdict = _run(settings, work)
    if not verdict.ok:
        raise Failed(
            f"broken: event {verdict.first_broken_id}: {verdict.reason} "
            f"({verdict.checked} events checked; last intact id {verdict.last_id or '-'})",
            CHECK_FAILED,
        )
    print(
        f"ok: {verdict.checked} events, last id {verdict.last_id or '-'} hash {verdict.last_hash}"
    )
    signed = "signatures checked" if verdict.signatures_checked else "signatures NOT checked"
    if not verdict.checkpoints:
        print(f"checkpoints: none ({signed}); no event is anchored outside this host")
    else:
        print(
            f"checkpoints: {verdict.checkpoints} ({signed}), last id "
            f"{verdict.last_checkpoint_id} at {verdict.last_checkpoint_ts}, "
            f"{verdict.after_checkpoint} events after it"
        )
    late = checkpoint_late(verdict, settings, args.max_checkpoint_age)
    if late:
        # The newest checkpoints gone with the newest rows, or the worker stopped: only
        # the collector's copies (syslog) tell which.
        message = (
            f"the last checkpoint is {late} old, the worker signs one every "
            f"{settings.audit_checkpoint_interval_s} s: rows may have been removed from the "
            "end, or the worker has stopped; compare with the checkpoints syslog received"
        )
        if args.max_checkpoint_age is not None:
            raise Failed(message, CHECK_FAILED)
        print(f"warning: {message}")
    return OK


def checkpoint_late(verdict: Verdict, settings: Settings, max_age_s: int | None) -> str:
    """How late the last checkpoint is ("2:05:00"), or "" if it is not (or none is due).
    Late: older than ``max_age_s``, by default two intervals and a minute."""
    interval = settings.audit_checkpoint_interval_s
    if not interval or not settings.vault_addr:
        return ""
    if not verdict.last_checkpoint_ts:
        return "missing" if verdict.checked else ""
    try:
        age = datetime.now(UTC) - datetime.fromisoformat(verdict.last_checkpoint_ts)
    except ValueError:
        return "unreadable"
    allowed = timedelta(seconds=max_age_s if max_age_s is not None else 2 * interval + 60)
    return str(age).split(".")[0] if age > allowed else ""


def audit_checkpoint(settings: Settings, _: argparse.Namespace) -> int:
    from app.audit.checkpoint import write_checkpoint

    event = _run(settings, lambda: write_checkpoint(settings))
    if event is None:
        print("ok: a checkpoint less than half an interval old is the newest row; none written")
    else:
        print(f"ok: checkpoint {event.id} signs event {event.detail['covers_id'] or '-'}")
    return OK


def reindex(settings: Settings, _: argparse.Namespace) -> int:
    from app.kb.worker import reindex as reindex_chunks

    count = _run(settings, lambda: reindex_chunks(settings))
    print(f"ok: {count} chunks re-embedded")
    return OK


def rewrap(settings: Settings, _: argparse.Namespace) -> int:
    """Re-encrypt every encrypted value with a fresh data key (after a key rotation)."""
    from app.audit import record
    from app.crypto import new_cipher
    from app.db import sessionmaker, sync_engine
    from app.kb.worker import ADMIN_CLI
    from app.sealed import COLUMNS
    from app.sealed import rewrap as rewrap_column

    cipher = new_cipher(settings)  # not the process's: its data key is new
    done = []
    with sync_engine(settings).connect() as conn:
        for column in COLUMNS:
            done.append(rewrap_column(conn, cipher, column, commit=conn.commit))
            print(f"ok: {done[-1].line()}")

    async def audit() -> None:
        async with sessionmaker(settings)() as session:
            await record(
                session, settings, "keys.rewrap", ADMIN_CLI, entity_type="key",
                entity_id=settings.vault_transit_key,
                detail={d.column: {"rewrapped": d.rewrapped, "unreadable": d.unreadable,
                                   "after": dict(d.key_versions_after)} for d in done},
            )  # fmt: skip
            await session.commit()

    _run(settings, audit)
    unreadable = sum(d.unreadable for d in done)
    if unreadable:
        raise Failed(
            f"{unreadable} values do not decrypt (corrupt, or moved from another row) and "
            "stay as they were: the log names their rows; every other value is re-encrypted",
            CHECK_FAILED,
        )
    return OK


def vault_unwrap(settings: Settings, _: argparse.Namespace) -> int:
    from app.vault_keys import UnwrapError, unwrap_secret_id

    try:
        print(f"ok: {unwrap_secret_id(settings)}")
    except UnwrapError as exc:
        raise Failed(str(exc), UNAVAILABLE if "unreachable" in str(exc) else CHECK_FAILED) from exc
    return OK


def users(settings: Settings, args: argparse.Namespace) -> int:
    """The ``users`` commands; every change is audited as clinchat-admin."""
    from sqlalchemy import select

    from app.audit import record
    from app.auth import lifecycle
    from app.db import sessionmaker
    from app.kb.worker import ADMIN_CLI
    from app.models import User

    if args.users_command == "sync":
        try:
            report = _run(
                settings,
                lambda: lifecycle.sync_directory(settings, args.names or None, force=args.force),
            )
        except lifecycle.SyncRefused as exc:
            raise Failed(str(exc), CHECK_FAILED) from exc
        if report.skipped:
            raise Failed("another host is running the directory sync; try again", UNAVAILABLE)
        print(
            f"ok: {report.checked} directory users checked; disabled: "
            f"{', '.join(report.disabled) or '-'}; new roles: "
            f"{', '.join(report.roles_changed) or '-'}; new groups: "
            f"{', '.join(report.groups_changed) or '-'}; ambiguous: "
            f"{', '.join(report.ambiguous) or '-'}"
        )
        return OK

    async def work() -> str:
        async with sessionmaker(settings)() as db:
            if args.users_command == "list":
                rows = await db.scalars(select(User).order_by(User.username))
                return "\n".join(
                    f"{u.username}\t{u.source}\t{','.join(sorted(u.roles)) or '-'}\t"
                    f"{'disabled' if u.disabled else 'enabled'}"
                    for u in rows
                )
            user = await db.scalar(select(User).where(User.username == args.name.strip().lower()))
            if user is None:
                user = await db.scalar(select(User).where(User.username == args.name.strip()))
            if user is None:
                raise Failed(f"no user {args.name!r}", BAD_INPUT)
            user_id, message = user.id, ""
            if args.users_command == "disable":
                await lifecycle.disable(db, settings, user, ADMIN_CLI, args.reason)
                message = f"ok: {user.username} disabled; tokens revoked, sessions ended"
            elif args.users_command == "enable":
                await lifecycle.enable(db, settings, user, ADMIN_CLI)
                message = f"ok: {user.username} enabled"
            elif args.users_command == "revoke-tokens":
                count = await lifecycle.revoke_tokens(db, settings, user, ADMIN_CLI)
                message = f"ok: {count} tokens of {user.username} revoked"
            elif args.users_command == "end-sessions":
                await record(
                    db, settings, "user.sessions_ended", ADMIN_CLI, entity_type="user",
                    entity_id=user.id,
                )  # fmt: skip
                message = f"ok: every session of {user.username} ended"
            await db.commit()
        if args.users_command in ("disable", "end-sessions"):
            await lifecycle.end_sessions(settings, [user_id])
        return message

    print(_run(settings, work))
    return OK


def worker(_: Settings, __: argparse.Namespace) -> int:
    from app.kb.worker import main as worker_main

    worker_main()  # logs JSON like the service; stops on SIGTERM or SIGINT
    return OK


# -- the command line ---------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="clinchat-admin", description="ClinChat administration (settings from the environment)"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("migrate", help="apply the schema migrations").set_defaults(run=migrate)

    user = commands.add_parser("create-user", help="create a local (break-glass) account")
    user.add_argument("username")
    user.add_argument(
        "--role", action="append", required=True, choices=[r.value for r in Role],
        help="a role; repeat for more",
    )  # fmt: skip
    user.add_argument("--password-file", help="read the password from FILE ('-': stdin)")
    user.add_argument(
        "--totp", action="store_true", help="enrol its second factor now (printed once)"
    )
    user.set_defaults(run=create_user)

    factor = commands.add_parser("totp", help="a local account's second factor (TOTP)")
    factor_commands = factor.add_subparsers(dest="totp_command", required=True, metavar="COMMAND")
    for name, text in (
        ("enrol", "enrol: print the otpauth:// URI and the secret, once"),
        ("reset", "remove it: the account cannot sign in until enrolled again"),
    ):
        one = factor_commands.add_parser(name, help=text)
        one.add_argument("name", metavar="NAME")
        one.set_defaults(run=totp_factor)

    files = commands.add_parser("ingest", help="add every supported file under DIR")
    files.add_argument("path", metavar="DIR")
    files.add_argument("--now", action="store_true", help="process here instead of the worker")
    files.set_defaults(run=ingest)

    audit = commands.add_parser("audit", help="the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify_parser = audit_commands.add_parser(
        "verify", help="verify the HMAC chain and the signed checkpoints"
    )
    verify_parser.add_argument(
        "--max-checkpoint-age",
        type=int,
        metavar="SECONDS",
        help="fail (exit 1) when the last checkpoint is older than this (default: warn "
        "past two intervals)",
    )
    verify_parser.set_defaults(run=audit_verify)
    audit_commands.add_parser(
        "checkpoint", help="sign a checkpoint of the chain now (Vault transit)"
    ).set_defaults(run=audit_checkpoint)

    people = commands.add_parser("users", help="users: list, disable, enable, sign out, sync")
    people_commands = people.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    people_commands.add_parser("list", help="every user").set_defaults(run=users)
    for name, text in (
        ("disable", "disable: revoke every token, end every session"),
        ("enable", "enable again"),
        ("end-sessions", "end every session of the user"),
        ("revoke-tokens", "revoke every API token of the user"),
    ):
        one = people_commands.add_parser(name, help=text)
        one.add_argument("name", metavar="NAME")
        if name == "disable":
            one.add_argument(
                "--reason", choices=["left", "suspended", "compromised"], default="suspended",
                help="recorded in the audit trail (default: suspended)",
            )  # fmt: skip
        one.set_defaults(run=users)
    sync = people_commands.add_parser("sync", help="disable directory leavers now")
    sync.add_argument("names", nargs="*", metavar="NAME", help="only these directory users")
    sync.add_argument(
        "--force", action="store_true", help="even when many users would be disabled at once"
    )
    sync.set_defaults(run=users)

    commands.add_parser("reindex", help="re-embed every searchable chunk").set_defaults(run=reindex)
    commands.add_parser(
        "rewrap", help="re-encrypt every encrypted value with a new data key (key rotation)"
    ).set_defaults(run=rewrap)
    commands.add_parser("worker", help="run the ingestion worker").set_defaults(run=worker)
    commands.add_parser(
        "vault-unwrap", help="trade the response-wrapped AppRole secret id for the secret id"
    ).set_defaults(run=vault_unwrap)
    return top


def _fail(message: str, code: int) -> NoReturn:
    print(f"clinchat-admin: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as exc:
        # a field's name, never its value (it may be a secret); our own checks' messages
        problems = sorted({".".join(str(p) for p in e["loc"]) or e["msg"] for e in exc.errors()})
        _fail(f"invalid settings: {'; '.join(problems)}", BAD_INPUT)
    try:
        code = args.run(settings, args)
    except Failed as exc:
        _fail(exc.message, exc.code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as exc:
        name = _dependency(exc)
        if name is not None:
            _fail(f"{name} is unavailable ({type(exc).__name__})", UNAVAILABLE)
        if isinstance(exc, AuditUnavailable):
            _fail(str(exc), UNAVAILABLE)
        raise  # a bug: the traceback is what a developer needs
    sys.exit(code)


if __name__ == "__main__":
    main()
