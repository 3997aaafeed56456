"""redis: the app host reaches Redis over verified TLS with its ACL user and
password; plaintext, no password, a wrong password, TLS 1.1, weak ciphers,
forbidden commands and keys are refused; sslyze finds the TLS port Mozilla
intermediate compliant; data survives a restart and a kill."""

import re
import secrets
import shlex
import time

import pytest
from labtest import PKI_DIR, lab_host, secret
from tlscheck import mozilla_intermediate

CACHE = "10.213.0.30"
CACHE_NAME = "mol-redis-cache"
CA = "/etc/clinchat/pki/ca.crt"
USER = "clinchat-app"
# Measured: Debian's unit 1.1, with the role's drop-in 1.0 (README).
EXPOSURE_MAX = 1.0


@pytest.fixture(scope="module")
def app_host():
    return lab_host("mol-redis-app")


@pytest.fixture(scope="module")
def cache_host():
    return lab_host(CACHE_NAME)


def cli(host, *command, user=USER, password=None, tls=True, cacert=CA, stdin=None):
    """redis-cli from a host; the password in REDISCLI_AUTH, never on the command line.
    redis-cli exits 0 on error replies, so callers read its output."""
    args = ["timeout", "10", "redis-cli", "-h", CACHE, "-p", "6379"]
    if tls:
        args += ["--tls", "--cacert", cacert]
    if user is not None:
        args += ["--user", user]
    args += list(command)
    env = ""
    if user is not None:
        password = secret("redis_app_password") if password is None else password
        env = f"REDISCLI_AUTH={shlex.quote(password)} "
    cmd = env + shlex.join(args)
    if stdin is not None:
        cmd = f"printf %s {shlex.quote(stdin)} | {cmd}"
    result = host.run(cmd)
    return result, result.stdout + result.stderr


def key(prefix="clinchat:session:molecule-"):
    return prefix + secrets.token_hex(6)


# -- 1. the app's user over verified TLS --------------------------------------------------------


def test_app_user_sets_and_gets_a_session_over_verified_tls(app_host):
    name = key()
    _, out = cli(app_host, "SET", name, "hello", "EX", "300")
    assert out.strip() == "OK", out
    _, out = cli(app_host, "GET", name)
    assert out.strip() == "hello", out


def test_the_client_verifies_the_certificate(app_host):
    """The same command with a CA that did not sign the server's certificate fails:
    redis-cli really checks the chain (so the test above is verified TLS)."""
    other_ca = app_host.check_output(
        "ls /usr/share/ca-certificates/mozilla/*.crt | grep -m1 ISRG_Root_X1"
    )
    _, out = cli(app_host, "PING", cacert=other_ca)
    assert "PONG" not in out
    assert "certificate verify failed" in out, out


@pytest.mark.parametrize(
    ("name_option", "name", "ok"),
    [
        ("-verify_ip", CACHE, True),
        ("-verify_hostname", CACHE_NAME, True),
        ("-verify_hostname", "not-the-cache.example", False),
    ],
)
def test_the_certificate_carries_the_cache_hosts_names(app_host, name_option, name, ok):
    result = app_host.run(
        f"openssl s_client -connect {CACHE}:6379 -CAfile {CA} {name_option} {name} "
        "-verify_return_error -brief </dev/null"
    )
    assert (result.rc == 0) is ok, result.stderr


def test_every_command_the_app_uses_is_allowed(app_host):
    """The app's own sequences (app/auth/sessions.py, lockout.py, app/kb/worker.py),
    on one connection: nothing it needs is refused."""
    session, user_sessions = key(), key("clinchat:user-sessions:molecule-")
    fail, queue = key("clinchat:signin:fail:user:"), "clinchat:ingest"
    script = "\n".join(
        [
            "PING",
            "MULTI",
            f"SET {session} {{}} EX 900",
            f"SADD {user_sessions} {session}",
            f"EXPIRE {user_sessions} 3600",
            "EXEC",
            f"GET {session}",
            f"SMEMBERS {user_sessions}",
            f"SET {fail} 0 EX 60 NX",
            f"INCR {fail}",
            f"TTL {fail}",
            f"LPUSH {queue} molecule-job",
            f"LMOVE {queue} clinchat:ingest:processing RIGHT LEFT",
            "BLMOVE clinchat:ingest clinchat:ingest:processing RIGHT LEFT 1",
            "LRANGE clinchat:ingest:processing 0 -1",
            "LREM clinchat:ingest:processing 1 molecule-job",
            "MULTI",
            "DISCARD",
            "CLIENT SETINFO LIB-NAME molecule",
            f"DEL {session} {user_sessions} {fail}",
        ]
    )
    _, out = cli(app_host, stdin=script + "\n")
    assert "NOPERM" not in out and "ERR" not in out, out
    assert "PONG" in out
    assert "molecule-job" in out


# -- 2. TLS only --------------------------------------------------------------------------------


def test_plaintext_is_refused(app_host):
    """The same client and command without TLS: the server answers nothing
    (with TLS, the same unauthenticated PING gets NOAUTH: the server is there)."""
    _, with_tls = cli(app_host, "PING", user=None)
    assert "NOAUTH" in with_tls, with_tls
    _, plain = cli(app_host, "PING", user=None, tls=False)
    assert "PONG" not in plain and "NOAUTH" not in plain
    assert re.search(r"Connection reset|Server closed|I/O error|Error", plain), plain


def test_redis_listens_on_the_tls_port_only(cache_host):
    sockets = cache_host.check_output("ss -Htlnp")
    redis_lines = [line for line in sockets.splitlines() if '"redis-server"' in line]
    listening = {line.split()[3] for line in redis_lines}
    assert listening == {f"{CACHE}:6379", "127.0.0.1:6379"}, sockets
    udp = cache_host.check_output("ss -Hulnp")
    assert '"redis-server"' not in udp


# -- 3, 4. authentication -----------------------------------------------------------------------


def test_the_default_user_is_refused(app_host):
    _, out = cli(app_host, "GET", "clinchat:session:x", user=None)
    assert "NOAUTH" in out, out
    _, out = cli(app_host, "GET", "clinchat:session:x", user="default", password="anything")
    assert "WRONGPASS" in out and "NOAUTH" in out, out


def test_a_wrong_password_is_refused(app_host):
    _, out = cli(app_host, "GET", "clinchat:session:x", password="not-the-password")
    assert "WRONGPASS" in out, out
    assert "NOAUTH" in out, out


def test_the_acl_file_holds_no_clear_password(cache_host):
    acl = cache_host.file("/etc/redis/users.acl")
    assert acl.user == "root" and acl.group == "redis" and acl.mode == 0o640
    content = cache_host.check_output("cat /etc/redis/users.acl")
    password = secret("redis_app_password")
    assert password not in content
    assert re.search(rf"^user {USER} on .*#[0-9a-f]{{64}} ", content, re.M), "no hashed password"
    assert re.search(r"^user default off ", content, re.M)


# -- 5. what the app's user may not do ----------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["FLUSHALL"],
        ["FLUSHDB"],
        ["CONFIG", "GET", "*"],
        ["CONFIG", "SET", "appendonly", "no"],
        ["KEYS", "*"],
        ["SCAN", "0"],
        ["DEBUG", "SLEEP", "0"],
        ["SHUTDOWN", "NOSAVE"],
        ["ACL", "LIST"],
        ["ACL", "SETUSER", "intruder", "on", "+@all"],
        ["MODULE", "LIST"],
        ["SCRIPT", "FLUSH"],
        ["EVAL", "return 1", "0"],
        ["FUNCTION", "FLUSH"],
        ["SAVE"],
        ["BGREWRITEAOF"],
        ["REPLICAOF", "10.213.0.31", "6379"],
        ["CLIENT", "LIST"],
        ["CLIENT", "KILL", "TYPE", "normal"],
        ["INFO"],
        ["SELECT", "1"],
        ["SUBSCRIBE", "clinchat:x"],
    ],
)
def test_a_forbidden_command_is_refused(app_host, command):
    _, out = cli(app_host, *command)
    if command[0] == "DEBUG":
        # enable-debug-command no refuses it before the ACL is consulted.
        assert "NOPERM" in out or "DEBUG command not allowed" in out, out
    else:
        assert "NOPERM" in out, out


def test_a_key_outside_the_apps_patterns_is_refused(app_host):
    for name in ["other:key", "clinchat:other", "clinchat:ingest:other"]:
        _, out = cli(app_host, "SET", name, "x")
        assert "NOPERM" in out and "key" in out, out
        _, out = cli(app_host, "GET", name)
        assert "NOPERM" in out, out


# -- 6. TLS versions and ciphers ----------------------------------------------------------------


def handshake(host, address, *options):
    return host.run(
        f"timeout 10 openssl s_client -connect {address} -CAfile {CA} -brief "
        + " ".join(options)
        + " </dev/null"
    )


def test_tls_1_1_is_refused_by_the_server(app_host):
    legacy = ["-tls1_1", "-cipher", "'DEFAULT@SECLEVEL=0'"]
    # The client can do TLS 1.1: against a throwaway server that allows it, on the
    # app host's loopback, the same options shake hands.
    port = 16379
    server = (
        f"timeout 10 openssl s_server -accept 127.0.0.1:{port} -naccept 1 -quiet "
        "-cert /etc/clinchat/pki/host.crt -key /etc/clinchat/pki/private/host.key "
        "-tls1_1 -cipher 'DEFAULT@SECLEVEL=0' </dev/null >/dev/null 2>&1 &"
    )
    app_host.run(server)
    time.sleep(1)
    capable = handshake(app_host, f"127.0.0.1:{port}", *legacy)
    assert "TLSv1.1" in capable.stdout + capable.stderr, capable.stderr
    # The cache host refuses it, and accepts TLS 1.2 with the same client.
    refused = handshake(app_host, f"{CACHE}:6379", *legacy)
    assert refused.rc != 0
    assert "TLSv1.1" not in refused.stdout
    accepted = handshake(app_host, f"{CACHE}:6379", "-tls1_2", "-cipher", "'DEFAULT@SECLEVEL=0'")
    assert accepted.rc == 0, accepted.stderr
    assert "TLSv1.2" in accepted.stderr


def test_a_cipher_outside_the_intermediate_list_is_refused(app_host):
    weak = handshake(app_host, f"{CACHE}:6379", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA")
    assert weak.rc != 0
    good = handshake(
        app_host, f"{CACHE}:6379", "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"
    )
    assert good.rc == 0, good.stderr
    tls13 = handshake(app_host, f"{CACHE}:6379", "-tls1_3")
    assert tls13.rc == 0 and "TLSv1.3" in tls13.stderr, tls13.stderr


def test_tls_meets_mozilla_intermediate():
    """sslyze from the controller: protocols, suites, curves (the groups of the
    role's OpenSSL configuration), certificate lifetime."""
    mozilla_intermediate(CACHE, 6379, ca_file=str(PKI_DIR / "ca.crt"))


# -- 7. persistence -----------------------------------------------------------------------------


def wait_for_redis(app_host, name, expected, seconds=30):
    out = ""
    for _ in range(seconds):
        _, out = cli(app_host, "GET", name)
        if out.strip() == expected:
            return
        time.sleep(1)
    pytest.fail(f"GET {name} after restart: {out!r}")


def test_data_survives_a_restart(app_host, cache_host):
    name = key()
    assert cli(app_host, "SET", name, "kept", "EX", "600")[1].strip() == "OK"
    cache_host.check_output("systemctl restart redis-server")
    wait_for_redis(app_host, name, "kept")


def test_the_append_only_file_keeps_data_through_a_kill(app_host, cache_host):
    """SIGKILL leaves no chance to save a snapshot: only the append-only file,
    fsynced every second, holds the key; systemd restarts the server."""
    name = key()
    assert cli(app_host, "SET", name, "fsynced", "EX", "600")[1].strip() == "OK"
    time.sleep(2)
    pid = cache_host.check_output("systemctl show -P MainPID redis-server")
    cache_host.check_output("systemctl kill --signal=KILL redis-server")
    wait_for_redis(app_host, name, "fsynced")
    assert cache_host.check_output("systemctl show -P MainPID redis-server") != pid
    assert cache_host.check_output("systemctl show -P NRestarts redis-server") != "0"


# -- 8. the sandbox, the configuration test -----------------------------------------------------


def test_the_sandbox_exposure_is_low(cache_host):
    out = cache_host.check_output("systemd-analyze security --no-pager redis-server.service")
    score = float(re.search(r"Overall exposure level for redis-server.service: ([0-9.]+)", out)[1])
    print(f"systemd-analyze security exposure: {score}")
    assert score <= EXPOSURE_MAX, out


def test_the_service_cannot_write_its_configuration(cache_host):
    writable = cache_host.check_output("systemctl show -P ReadWritePaths redis-server")
    assert set(writable.split()) == {"/var/lib/redis", "/run/redis"}
    assert cache_host.check_output("systemctl show -P ProtectSystem redis-server") == "strict"


def test_the_configuration_test_refuses_a_broken_configuration(cache_host):
    check = "/usr/local/libexec/clinchat/redis-check-config"
    assert cache_host.run(f"{check} /etc/redis/redis.conf").rc == 0
    for broken in [
        "tls-ciphers NOT-A-CIPHER",
        "no-such-directive yes",
        "tls-key-file /nonexistent",
    ]:
        cache_host.check_output("cp /etc/redis/redis.conf /root/broken.conf")
        cache_host.check_output(f"echo {shlex.quote(broken)} >> /root/broken.conf")
        result = cache_host.run(f"{check} /root/broken.conf")
        assert result.rc == 1, broken
        assert "refused the configuration" in result.stderr
    cache_host.check_output("printf 'user x on +no-such-command\\n' > /root/broken.acl")
    result = cache_host.run(f"{check} /etc/redis/redis.conf /root/broken.acl")
    assert result.rc == 1 and "ACL" in result.stderr, result.stderr


# -- the client address list --------------------------------------------------------------------


def test_a_host_outside_the_client_group_is_refused(cache_host):
    virt = cache_host.run("systemd-detect-virt").stdout.strip()
    if virt == "systemd-nspawn":
        pytest.skip(
            "systemd-nspawn: systemd cannot load IPAddressDeny's BPF programs in the "
            "container, so the address list is not enforced here (the role says so)"
        )
    other = lab_host("mol-redis-other")
    _, out = cli(other, "PING")
    assert "PONG" not in out


def test_a_transaction_survives_a_restart(app_host, cache_host):
    """The app's sessions are written in MULTI/EXEC. Redis replays those from its
    append-only file as the default user: they must come back after a restart
    (with the default user at -@all they were silently dropped, redis/redis#14541)."""
    name = key()
    script = f"MULTI\nSET {name} kept EX 600\nEXEC\n"
    _, out = cli(app_host, stdin=script)
    assert "OK" in out and "QUEUED" in out, out
    cache_host.check_output("systemctl restart redis-server")
    deadline = time.monotonic() + 30
    _, out = cli(app_host, "GET", name)
    while "kept" not in out and time.monotonic() < deadline:
        time.sleep(1)
        _, out = cli(app_host, "GET", name)
    assert "kept" in out, out
    journal = cache_host.check_output("journalctl -u redis-server -o cat -n 50")
    assert "NOPERM" not in journal, journal
    cli(app_host, "DEL", name)
