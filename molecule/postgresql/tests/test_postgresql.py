"""postgresql: the app host connects over verified TLS with its password; no
TLS, a wrong password, TLS 1.1, another host or another user are refused;
Mozilla's intermediate TLS profile (sslyze); a bad file never replaces a good
one; a setting that needs a restart waits for postgresql_restart_ok; pgaudit
writes DDL and role changes to syslog, and no password."""

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from labtest import PKI_DIR, lab_host, secret
from tlscheck import client_allows_old_tls, handshake, mozilla_intermediate

DB = "10.213.0.22"
CA = "/etc/clinchat/pki/ca.crt"


def psql(host, sql, password=None, **params):
    conninfo = {
        "host": DB,
        "port": "5432",
        "dbname": "clinchat",
        "user": "clinchat_app",
        "sslmode": "verify-full",
        "sslrootcert": CA,
        "connect_timeout": "5",
    } | params
    dsn = " ".join(f"{k}={v}" for k, v in conninfo.items())
    if password is None:
        password = secret("postgresql_app_password")
    env = f"PGPASSWORD={shlex.quote(password)}"
    return host.run(f"{env} psql {shlex.quote(dsn)} -XAtc {shlex.quote(sql)}")


@pytest.fixture(scope="module")
def app_host():
    return lab_host("mol-pg-app")


@pytest.fixture(scope="module")
def db_host():
    return lab_host("mol-pg-db")


def test_app_host_connects_over_verified_tls(app_host):
    result = psql(app_host, "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
    assert result.rc == 0, result.stderr
    ssl, version = result.stdout.strip().split("|")
    assert ssl == "t"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_vector_extension_works(app_host):
    result = psql(app_host, "SELECT extname FROM pg_extension WHERE extname = 'vector'")
    assert result.stdout.strip() == "vector", result.stderr
    distance = psql(app_host, "SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector")
    assert distance.stdout.strip() == "1", distance.stderr


def psql_as_owner(host, sql):
    """psql as the schema owner (the migrations' role), over verified TLS."""
    return psql(host, sql, password=secret("postgresql_owner_password"), user="clinchat_owner")


def test_the_schema_owner_makes_tables_in_the_app_database(app_host):
    """The migrations' role (from the app host, over TLS) creates tables with vectors."""
    result = psql_as_owner(app_host, "CREATE TABLE t (v vector(3)); DROP TABLE t")
    assert result.rc == 0, result.stderr


def test_the_schema_owner_owns_the_database_and_the_app_role_does_not(app_host):
    """Two login roles (docs/DECISIONS.md): the migrations' owner and the service's."""
    owner = psql_as_owner(
        app_host,
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
    )
    assert owner.rc == 0, owner.stderr
    assert owner.stdout.strip() == "clinchat_owner"
    # The service's role cannot make tables: only the migrations (as the owner) do.
    create = psql(app_host, "CREATE TABLE public.not_allowed (id int)")
    assert create.rc != 0
    assert "permission denied" in create.stderr


def test_plain_tcp_without_tls_is_refused(app_host):
    result = psql(app_host, "SELECT 1", sslmode="disable")
    assert result.rc != 0
    assert "no encryption" in result.stderr or "rejects connection" in result.stderr, result.stderr


def test_wrong_password_is_refused(app_host):
    result = psql(app_host, "SELECT 1", password="not-the-password")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1.1"])
def test_tls_below_1_2_is_refused_by_a_client_that_offers_it(version, tmp_path):
    client_allows_old_tls(tmp_path)  # the same client gets through where it is allowed
    assert handshake(DB, 5432, "TLSv1.2", starttls="postgres").returncode == 0
    result = handshake(DB, 5432, version, starttls="postgres")
    assert result.returncode != 0, result.stdout


def test_tls_meets_mozilla_intermediate():
    """sslyze from the controller over STARTTLS: protocols, suites, curves, certificate."""
    mozilla_intermediate(DB, 5432, starttls="postgres", ca_file=str(PKI_DIR / "ca.crt"))


def test_a_host_outside_the_app_group_is_refused():
    other = lab_host("mol-pg-other")
    result = psql(other, "SELECT 1")
    assert result.rc != 0
    assert "rejects connection" in result.stderr, result.stderr


def test_the_superuser_cannot_connect_over_the_network(app_host):
    result = psql(app_host, "SELECT 1", user="postgres", dbname="postgres")
    assert result.rc != 0
    assert "rejects connection" in result.stderr, result.stderr


def test_the_app_user_reaches_only_its_database(app_host):
    result = psql(app_host, "SELECT 1", dbname="postgres")
    assert result.rc != 0


def test_server_settings(db_host):
    def show(setting):
        return db_host.check_output(
            f"runuser -u postgres -- psql -XAtc {shlex.quote('SHOW ' + setting)}"
        )

    assert show("ssl") == "on"
    assert show("ssl_min_protocol_version") == "TLSv1.2"
    assert "CBC" not in show("ssl_ciphers") and "GCM" in show("ssl_ciphers")
    assert show("password_encryption") == "scram-sha-256"
    assert show("shared_preload_libraries") == "pgaudit"
    assert show("pgaudit.log") == "ddl, role"
    assert show("listen_addresses") == DB
    verifier = db_host.check_output(
        "runuser -u postgres -- psql -XAtc "
        + shlex.quote("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'clinchat_app'")
    )
    assert verifier == "SCRAM-SHA-256$"
    assert db_host.socket(f"tcp://{DB}:5432").is_listening
    assert not db_host.socket("tcp://0.0.0.0:5432").is_listening


def test_pgaudit_logs_ddl_and_role_changes_to_syslog_without_secrets(app_host, db_host):
    """pgaudit (HIPAA 164.312(b)): DDL from the app host is an AUDIT line in the host's
    journal (syslog), as are the converge's role statements, which carried SCRAM
    verifiers (clinchat.appliance.scram_sha256), so no password is in any log."""
    table = f"pgaudit_probe_{os.getpid()}"
    result = psql_as_owner(app_host, f"CREATE TABLE {table} (id int); DROP TABLE {table}")
    assert result.rc == 0, result.stderr
    journal = db_host.check_output("journalctl -t postgres --no-pager -o cat")
    ddl = [line for line in journal.splitlines() if "AUDIT: SESSION" in line and table in line]
    assert any(",DDL,CREATE TABLE," in line for line in ddl), journal[-2000:]
    assert any(",DDL,DROP TABLE," in line for line in ddl), journal[-2000:]
    roles = [line for line in journal.splitlines() if "AUDIT: SESSION" in line and ",ROLE," in line]
    assert any("clinchat_app" in line for line in roles), journal[-2000:]
    logs = journal + db_host.check_output("cat /var/log/postgresql/*.log")
    for name in ("postgresql_app_password", "postgresql_owner_password"):
        assert secret(name) not in logs
    # reads and writes of rows are not audited: their statements may hold patient data
    select = psql(app_host, f"SELECT '{table}-read'")
    assert select.rc == 0, select.stderr
    assert f"{table}-read" not in db_host.check_output("journalctl -t postgres --no-pager -o cat")


def converge(tmp_path, extra_vars):
    """The scenario's converge playbook with extra variables (its drift report aside)."""
    env = os.environ | {"CLINCHAT_CHECK_DRIFT_FILE": str(tmp_path / "drift.json")}
    return subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"]]
        + ["-e", json.dumps(extra_vars)]
        + [str(Path(os.environ["MOLECULE_SCENARIO_DIRECTORY"]) / "converge.yml")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def sql(db_host, query):
    return db_host.check_output(f"runuser -u postgres -- psql -XAtc {shlex.quote(query)}")


def postmaster_pid(db_host):
    return db_host.check_output("head -1 /var/lib/postgresql/17/main/postmaster.pid")


@pytest.mark.parametrize(
    ("extra_vars", "path", "message"),
    [
        (
            {"postgresql_settings": {"no_such_setting": "1"}},
            "/etc/postgresql/17/main/conf.d/50-clinchat.conf",
            'unrecognized configuration parameter "no_such_setting"',
        ),
        (
            {"postgresql_app_client_addresses": ["10.213.0.300/33"]},
            "/etc/postgresql/17/main/pg_hba.conf",
            'CIDR mask is invalid: "10.213.0.300/33"',
        ),
    ],
    ids=["postgresql.conf", "pg_hba.conf"],
)
def test_a_bad_file_never_replaces_the_good_one(
    db_host, app_host, tmp_path, extra_vars, path, message
):
    """The role run with a bad setting fails on that file; the live file stays,
    the server still answers, and it still starts from the files on disk."""
    before = db_host.file(path).sha256sum
    result = converge(tmp_path, extra_vars)
    assert result.returncode != 0
    # ansible-core prints a task's failure on stderr, as JSON (quotes escaped)
    output = (result.stdout + result.stderr).replace('\\"', '"')
    assert message in output, output[-3000:]
    assert db_host.file(path).sha256sum == before
    assert psql(app_host, "SELECT 1").stdout.strip() == "1"
    db_host.check_output("systemctl restart postgresql@17-main")
    assert psql(app_host, "SELECT 1").stdout.strip() == "1"


def test_a_setting_that_needs_a_restart_waits_for_restart_ok(db_host, tmp_path):
    pid = postmaster_pid(db_host)
    try:
        result = converge(tmp_path, {"postgresql_settings": {"max_connections": "101"}})
        assert result.returncode == 0, result.stdout[-3000:]
        # reloaded, not restarted; the play says what waits
        assert postmaster_pid(db_host) == pid
        assert "PostgreSQL restart pending: max_connections" in result.stdout
        assert sql(db_host, "SHOW max_connections") == "100"
        assert (
            sql(db_host, "SELECT name FROM pg_settings WHERE pending_restart") == "max_connections"
        )

        result = converge(
            tmp_path,
            {"postgresql_settings": {"max_connections": "101"}, "postgresql_restart_ok": True},
        )
        assert result.returncode == 0, result.stdout[-3000:]
        assert postmaster_pid(db_host) != pid
        assert sql(db_host, "SHOW max_connections") == "101"
        assert sql(db_host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
    finally:
        restored = converge(tmp_path, {"postgresql_restart_ok": True})
        assert restored.returncode == 0, restored.stdout[-3000:]
    assert sql(db_host, "SHOW max_connections") == "100"
