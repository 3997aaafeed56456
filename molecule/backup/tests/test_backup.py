"""Scenario backup: pgBackRest's encrypted repository, WAL archiving, the
timers, and the restore drill (playbooks/restore.yml) with its RTO and RPO.

The tests run in file order and build on each other (the drill's rows, then
the crash, then the restores). The drill's numbers are printed and written to
artifacts/backup/restore-drill.json.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import time
from pathlib import Path

import pytest
from labtest import SECRETS_DIR, lab_host

STANZA = "clinchat"
REPO = "/var/lib/pgbackrest"
DATA = "/var/lib/postgresql/17/main"
SERVICE = "postgresql@17-main"
DB = "clinchat"
MARKER = "clinchat-backup-plaintext-marker-7f3a"
SCENARIO_DIR = Path(
    os.environ.get("MOLECULE_SCENARIO_DIRECTORY", Path(__file__).resolve().parents[1])
)
PROJECT_DIR = SCENARIO_DIR.parents[1]
RESULTS = PROJECT_DIR / "artifacts" / "backup" / "restore-drill.json"
# The drill's measurements, filled as the tests go.
DRILL: dict[str, float | int | str] = {}


@pytest.fixture(scope="module")
def db():
    return lab_host("mol-bk-db")


@pytest.fixture(scope="module")
def fresh():
    return lab_host("mol-bk-fresh")


def passphrase() -> str:
    return (SECRETS_DIR / "postgresql_backup_repo_cipher_pass").read_text().split()[0]


def sql(host, query: str, db: str = DB) -> str:
    return host.check_output(
        f"runuser -u postgres -- psql -XAt -v ON_ERROR_STOP=1 -d {db} -c {shlex.quote(query)}"
    )


def pgbackrest(host, *args: str, env: str = ""):
    command = f"{env} runuser -u postgres -- pgbackrest --stanza={STANZA} " + " ".join(
        map(shlex.quote, args)
    )
    return host.run(command.strip())


def info(host) -> dict:
    result = pgbackrest(host, "--output=json", "info")
    assert result.rc == 0, result.stderr
    return json.loads(result.stdout)[0]


def playbook(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """A playbook of the repository or the scenario, with its inventory and backup vars."""
    path = (
        PROJECT_DIR / "playbooks" / name
        if (PROJECT_DIR / "playbooks" / name).exists()
        else SCENARIO_DIR / name
    )
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "-e",
            f"@{SCENARIO_DIR / 'vars' / 'backup.yml'}",
        ]
        + list(extra)
        + [str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def wait_for_backup_service(host) -> None:
    """Until the full backup the restore playbook started in the background has ended."""
    for _ in range(150):
        state = host.run("systemctl is-active clinchat-backup-full.service").stdout.strip()
        if state != "activating":
            break
        time.sleep(2)
    assert host.run("systemctl is-failed clinchat-backup-full.service").stdout.strip() != "failed"


def save_results() -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(DRILL, indent=2, sort_keys=True) + "\n")


# --- the backup side -------------------------------------------------------


def test_wal_archiving_is_configured(db) -> None:
    assert sql(db, "SHOW archive_mode") == "on"
    assert (
        sql(db, "SHOW archive_command") == f"/usr/bin/pgbackrest --stanza={STANZA} archive-push %p"
    )
    assert sql(db, "SHOW archive_timeout") == "1min"
    assert sql(db, "SHOW wal_level") == "replica"


def test_pgbackrest_check_passes(db) -> None:
    result = pgbackrest(db, "check")
    assert result.rc == 0, result.stdout + result.stderr


def test_a_full_backup_exists(db) -> None:
    stanza = info(db)
    assert stanza["status"]["code"] == 0, stanza["status"]
    assert [b["type"] for b in stanza["backup"]][:1] == ["full"]
    assert stanza["cipher"] == "aes-256-cbc"


def test_a_switched_wal_segment_reaches_the_repository(db) -> None:
    sql(db, "CREATE TABLE IF NOT EXISTS backup_wal_probe (n int)")
    sql(db, "INSERT INTO backup_wal_probe VALUES (1)")
    segment = sql(db, "SELECT pg_walfile_name(pg_switch_wal())")
    found = ""
    for _ in range(30):
        found = db.check_output(f"find {REPO}/archive/{STANZA} -name {segment}-* -type f")
        if found:
            break
        time.sleep(1)
    assert found, f"WAL segment {segment} is not in the repository after 30 s"
    archive = info(db)["archive"][0]
    assert archive["max"] >= segment


def test_the_backup_service_runs_a_differential_backup(db) -> None:
    sql(
        db,
        "CREATE TABLE IF NOT EXISTS backup_marker (t text); "
        f"INSERT INTO backup_marker SELECT '{MARKER}-' || g FROM generate_series(1, 2000) g",
    )
    before = len(info(db)["backup"])
    db.check_output("systemctl start clinchat-backup-diff.service")
    backups = info(db)["backup"]
    assert len(backups) == before + 1
    assert backups[-1]["type"] == "diff"


def test_the_backup_metric_follows_every_successful_backup(db) -> None:
    """clinchat_backup_last_success_timestamp_seconds (alert ClinChatBackupLate) is the
    newest successful backup of each type in the repository, written after each one."""
    prom = db.file("/var/lib/prometheus/node-exporter/clinchat_backup.prom")
    assert prom.exists and prom.mode == 0o644
    values = dict(
        re.findall(
            r'^clinchat_backup_last_success_timestamp_seconds\{type="(\w+)"\} (\d+)$',
            prom.content_string,
            re.MULTILINE,
        )
    )
    newest: dict[str, int] = {}
    for backup in info(db)["backup"]:
        newest[backup["type"]] = max(newest.get(backup["type"], 0), backup["timestamp"]["stop"])
    assert {k: int(v) for k, v in values.items()} == newest
    assert set(newest) == {"full", "diff"}
    # The role's own run agrees: nothing to write.
    assert db.check_output("/usr/local/sbin/clinchat-backup-metric --check") == "unchanged"


def test_the_repository_is_encrypted(db) -> None:
    """Every file in the repository (info files, backups, WAL) is OpenSSL's
    salted format (pgBackRest's aes-256-cbc); no row of the database in clear."""
    files = db.check_output(f"find {REPO} -type f").split()
    assert len(files) > 10, files
    headers = db.check_output(f"find {REPO} -type f -exec head -c 8 {{}} \\; -exec echo \\;").split(
        "\n"
    )
    assert set(h for h in headers if h) == {"Salted__"}, set(headers)
    grep = db.run(f"grep -r -a -l -F {MARKER} {REPO}")
    assert grep.rc == 1, grep.stdout
    # and the rows are really in the database (and so in the last backup)
    assert sql(db, f"SELECT count(*) FROM backup_marker WHERE t LIKE '{MARKER}%'") == "2000"


def test_a_wrong_passphrase_reads_nothing(db) -> None:
    """pgBackRest with another passphrase: the info files do not decrypt (its
    message quotes the undecryptable bytes, hence bytes here), no backup is listed."""
    result = pgbackrest(
        db,
        "--output=json",
        "info",
        env="PGBACKREST_REPO1_CIPHER_PASS=not-the-passphrase-0123456789",
    )
    out = result.stdout_bytes.decode("utf-8", errors="replace")
    stanza = json.loads(out, strict=False)[0]  # the message quotes raw bytes
    assert stanza["status"]["code"] == 99, stanza["status"]
    assert stanza["backup"] == [] and stanza["archive"] == []


def test_the_passphrase_is_only_in_its_file(db) -> None:
    conf = db.file("/etc/pgbackrest/conf.d/50-clinchat-cipher.conf")
    assert (conf.user, conf.group, conf.mode) == ("root", "postgres", 0o640)
    secret = passphrase()
    assert secret in conf.content_string
    assert db.file("/etc/pgbackrest").mode == 0o750
    places = [
        "cat /etc/pgbackrest/pgbackrest.conf",
        "cat /etc/systemd/system/clinchat-backup-*",
        "systemctl show clinchat-backup-full.service clinchat-backup-diff.service",
        "journalctl --no-pager -o cat",
        "cat /var/log/pgbackrest/* /var/log/postgresql/*",
        "runuser -u postgres -- psql -XAtc 'SHOW archive_command'",
    ]
    for command in places:
        assert secret not in db.check_output(command), command


def test_the_timers_are_enabled_and_persistent(db) -> None:
    for kind, calendar in (("full", "Sun *-*-* 01:30:00"), ("diff", "Mon..Sat *-*-* 01:30:00")):
        timer = db.service(f"clinchat-backup-{kind}.timer")
        assert timer.is_enabled and timer.is_running
        shown = db.check_output(
            f"systemctl show clinchat-backup-{kind}.timer -p Persistent -p TimersCalendar"
        )
        assert "Persistent=yes" in shown
        assert calendar.split()[0] in shown, shown
        unit = db.check_output(
            f"systemctl show clinchat-backup-{kind}.service -p User -p ExecStart"
        )
        assert "User=postgres" in unit and f"--type={kind}" in unit


def audit_run(tmp_path, *extra: str) -> subprocess.CompletedProcess[str]:
    """converge.yml as the auditors run it (--check --diff, clinchat_audit), its
    drift report aside (the scenario's own is the check step's)."""
    env = os.environ | {"CLINCHAT_CHECK_DRIFT_FILE": str(tmp_path / "drift.json")}
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], "--check", "--diff"]
        + ["-e", "clinchat_audit=true", *extra, str(SCENARIO_DIR / "converge.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_audit_controls_pass_and_find_a_stale_backup(tmp_path) -> None:
    """CLINCHAT-BACKUP-1 (a recent backup) and -2 (archiving not failing) pass
    on the converged host; a backup older than the limit is drift."""
    clean = audit_run(tmp_path)
    assert clean.returncode == 0, clean.stdout[-3000:]
    assert re.search(r"mol-bk-db\s*:\s*ok=\d+\s+changed=0 ", clean.stdout), clean.stdout[-2000:]
    for control in ("CLINCHAT-BACKUP-1 | AUDIT | Ensure", "CLINCHAT-BACKUP-2 | AUDIT | Ensure"):
        assert control in clean.stdout
    stale = audit_run(tmp_path, "-e", "postgresql_backup_max_age_h=0")
    assert stale.returncode == 0, stale.stdout[-3000:]
    assert re.search(r"mol-bk-db\s*:\s*ok=\d+\s+changed=1 ", stale.stdout), stale.stdout[-2000:]
    drift = json.loads((tmp_path / "drift.json").read_text())
    assert len(drift) == 1 and "CLINCHAT-BACKUP-1" in json.dumps(drift), drift


# --- the restore drill -----------------------------------------------------


def test_restore_refuses_a_cluster_with_data(db) -> None:
    before = sql(db, "SELECT count(*) FROM backup_marker")
    result = playbook("restore.yml", "-e", "restore_hosts=mol-bk-db")
    assert result.returncode != 0
    assert "restore_overwrite=true" in result.stdout, result.stdout[-3000:]
    assert db.service(SERVICE).is_running
    assert sql(db, "SELECT count(*) FROM backup_marker") == before


def test_drill_rows_written_then_the_host_crashes(db) -> None:
    """2500 rows that a backup and a switched, archived segment hold; then one
    row every 0.5 s for 80 s, the last of them only as safe as archive_timeout
    makes them; then the cluster is killed and its data directory wiped."""
    sql(
        db,
        "CREATE TABLE drill (n int PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    sql(db, "INSERT INTO drill (n) SELECT g FROM generate_series(1, 2000) g")
    assert pgbackrest(db, "--type=diff", "backup").rc == 0
    sql(db, "INSERT INTO drill (n) SELECT g FROM generate_series(2001, 2500) g")
    check = pgbackrest(db, "check")  # switches the segment and waits until it is archived
    assert check.rc == 0, check.stderr
    # the point in time of the last test: after row 2500, before the writer's first row
    DRILL["pitr_target"] = sql(db, "SELECT clock_timestamp()")
    time.sleep(2)
    writer = (
        "for i in $(seq 100001 100160); do "
        f"runuser -u postgres -- psql -XAtq -d {DB} "
        '-c "INSERT INTO drill (n) VALUES ($i)"; sleep 0.5; done'
    )
    db.check_output(f"bash -c {shlex.quote(writer)}")
    DRILL["rows_written"] = int(sql(db, "SELECT count(*) FROM drill"))
    DRILL["last_write_epoch"] = float(sql(db, "SELECT extract(epoch FROM max(ts)) FROM drill"))
    DRILL["rows_safe"] = 2500
    # the crash: no shutdown checkpoint, no last archive; then the disk is lost
    # (The postmaster alone: a cgroup-wide `systemctl kill` also hits the unit's
    # ExecStop, which systemd then waits for forever, seen once in four runs.)
    db.check_output(f"kill -KILL $(head -1 {DATA}/postmaster.pid)")
    for _ in range(60):
        if db.run(f"systemctl is-active {SERVICE}").stdout.strip() in ("inactive", "failed"):
            break
        time.sleep(1)
    assert db.run(f"systemctl is-active {SERVICE}").stdout.strip() in ("inactive", "failed")
    db.run(f"systemctl reset-failed {SERVICE}")
    db.check_output(f"find {DATA} -mindepth 1 -delete")
    assert db.file(DATA).exists and not db.file(f"{DATA}/PG_VERSION").exists


def test_drill_restore_brings_every_archived_row_back(db) -> None:
    started = time.monotonic()
    result = playbook("restore.yml", "-e", "restore_hosts=mol-bk-db")
    DRILL["rto_playbook_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-5000:]
    restored = re.search(r"restored in ([0-9.]+) s", result.stdout)
    assert restored, result.stdout[-3000:]
    DRILL["rto_restore_s"] = float(restored.group(1))
    # every row that a backup or an archived segment held is back
    assert sql(db, "SELECT count(*) FROM drill WHERE n <= 2500") == "2500"
    assert sql(db, "SELECT count(*) FROM backup_marker") == "2000"
    rows = int(sql(db, "SELECT count(*) FROM drill"))
    last = float(sql(db, "SELECT extract(epoch FROM max(ts)) FROM drill"))
    DRILL["rows_restored"] = rows
    DRILL["rows_lost"] = int(DRILL["rows_written"]) - rows
    DRILL["rpo_s"] = round(float(DRILL["last_write_epoch"]) - last, 1)
    DRILL["archive_timeout_s"] = 60
    save_results()
    print(f"\nrestore drill (same host, data directory lost): {json.dumps(DRILL, sort_keys=True)}")
    # archive_timeout (60 s) bounds what is lost, plus the time to archive a segment
    assert float(DRILL["rpo_s"]) <= 60 + 15, DRILL
    assert rows > 2500, "no row written after the last backup was recovered from the archived WAL"
    # the restored cluster is the role's again: archiving on its new timeline, timers
    assert sql(db, "SELECT pg_is_in_recovery()") == "f"
    wait_for_backup_service(db)
    check = pgbackrest(db, "check")
    assert check.rc == 0, check.stderr
    assert db.service("clinchat-backup-full.timer").is_running


def test_drill_restore_on_a_fresh_host(db, fresh, tmp_path) -> None:
    """The repository (a copy: the backup storage mounted on a replacement
    host) restored on a host that has never had PostgreSQL."""
    assert not fresh.file(DATA).exists
    wait_for_backup_service(db)
    copied = playbook("copy-repo.yml", "-e", f"copy_repo_tmp={tmp_path}")
    assert copied.returncode == 0, copied.stdout[-3000:]
    expected = sql(db, "SELECT count(*), max(n) FROM drill")
    started = time.monotonic()
    result = playbook(
        "restore.yml", "-e", "restore_hosts=mol-bk-fresh", "-e", "restore_backup_after=false"
    )
    DRILL["rto_fresh_host_playbook_s"] = round(time.monotonic() - started, 1)
    assert result.returncode == 0, result.stdout[-5000:]
    restored = re.search(r"restored in ([0-9.]+) s", result.stdout)
    assert restored, result.stdout[-3000:]
    DRILL["rto_fresh_host_restore_s"] = float(restored.group(1))
    save_results()
    print(f"\nrestore drill (fresh host): {json.dumps(DRILL, sort_keys=True)}")
    # the fresh host has what the db host had at the end of the last restore's WAL
    assert sql(fresh, "SELECT count(*) FROM drill WHERE n <= 2500") == "2500"
    assert sql(fresh, "SELECT count(*) FROM backup_marker") == "2000"
    assert int(sql(fresh, "SELECT count(*) FROM drill")) >= int(DRILL["rows_restored"])
    assert expected  # the db host answered
    # configured by the role: TLS on, archiving on
    assert sql(fresh, "SHOW ssl", db="postgres") == "on"
    assert sql(fresh, "SHOW archive_mode", db="postgres") == "on"


def test_drill_point_in_time_restore_over_a_running_cluster(db) -> None:
    """restore_overwrite=true over the running cluster, to the time between row
    2500 and the writer's first row: exactly the first 2500 rows."""
    wait_for_backup_service(db)
    target = str(DRILL["pitr_target"])
    result = playbook(
        "restore.yml",
        "-e",
        "restore_hosts=mol-bk-db",
        "-e",
        json.dumps({"restore_overwrite": True, "restore_target_time": target}),
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert f"up to {target}" in result.stdout
    assert sql(db, "SELECT count(*) FROM drill WHERE n <= 2500") == "2500"
    assert sql(db, "SELECT count(*) FROM drill WHERE n > 2500") == "0"
    assert sql(db, "SELECT pg_is_in_recovery()") == "f"
    wait_for_backup_service(db)
    check = pgbackrest(db, "check")
    assert check.rc == 0, check.stderr
