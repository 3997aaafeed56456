"""postgresql: the app host connects over verified TLS with its password; no
TLS, a wrong password, TLS 1.1, another host or another user are refused."""

import shlex

import pytest
from labtest import lab_host, secret

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


def test_the_app_user_owns_the_app_database(app_host):
    assert psql(app_host, "CREATE TABLE t (v vector(3)); DROP TABLE t").rc == 0


def test_plain_tcp_without_tls_is_refused(app_host):
    result = psql(app_host, "SELECT 1", sslmode="disable")
    assert result.rc != 0
    assert "no encryption" in result.stderr or "rejects connection" in result.stderr, result.stderr


def test_wrong_password_is_refused(app_host):
    result = psql(app_host, "SELECT 1", password="not-the-password")
    assert result.rc != 0
    assert "password authentication failed" in result.stderr


def test_tls_below_1_2_is_refused(app_host):
    result = psql(app_host, "SELECT 1", ssl_max_protocol_version="TLSv1.1")
    assert result.rc != 0


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
    assert show("password_encryption") == "scram-sha-256"
    assert show("listen_addresses") == DB
    verifier = db_host.check_output(
        "runuser -u postgres -- psql -XAtc "
        + shlex.quote("SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = 'clinchat_app'")
    )
    assert verifier == "SCRAM-SHA-256$"
    assert db_host.socket(f"tcp://{DB}:5432").is_listening
    assert not db_host.socket("tcp://0.0.0.0:5432").is_listening
