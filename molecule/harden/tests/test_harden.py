"""harden: the hardened host refuses, to real clients, what its controls forbid.

SSH from the client host (a real OpenSSH client): a password login with the
right password is refused (the server offers publickey only), so is root's,
a user outside AllowGroups with a valid key, a CBC cipher, an MD5 MAC and a
SHA-1 key exchange; the administrator's key login works. PAM through real
conversations on the host (a pty): pwquality refuses a weak password, faillock
locks an account after harden_faillock_deny failures of `su`. Shells: TMOUT
read-only, umask 027. cron and at for root only."""

import shlex

import pytest
from labtest import lab_host, secret

HARDENED = "10.213.0.43"
ADMIN_KEY = "/root/.ssh/hardadmin"
SSH_OPTIONS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "ConnectTimeout=10",
    "-o", "BatchMode=no",
]  # fmt: skip
DENY = 5  # harden_faillock_deny (the role's default)

# Runs argv under a pty on the host and answers each password prompt with the
# next line of stdin (the passwords never appear on a command line).
PTY_DRIVER = r"""
import os, pty, re, select, signal, sys, time
answers = sys.stdin.read().split("\n")
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
out, given, deadline = b"", 0, time.time() + 30
while time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.5)
    if fd in ready:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        out += data
        prompts = len(re.findall(rb"(?i)password: ?", out))
        while given < prompts and given < len(answers):
            os.write(fd, answers[given].encode() + b"\n")
            given += 1
    elif given >= len(answers) and re.search(rb"(?i)password: ?$", out):
        break  # asked again with nothing left to answer
try:
    os.kill(pid, signal.SIGKILL)
except ProcessLookupError:
    pass
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 99)
"""


@pytest.fixture(scope="module")
def host():
    return lab_host("mol-harden")


@pytest.fixture(scope="module")
def client():
    return lab_host("mol-harden-client")


class Result:
    """rc and the combined output of a command (testinfra's ssh backend takes an
    exit status of 255, which is ssh's own refusal here, for its own failure)."""

    def __init__(self, rc, out):
        self.rc, self.out = rc, out
        self.stdout = out


def run(host, cmd):
    result = host.run(f"( {cmd} ) 2>&1; echo __rc=$?")
    body, _, rc = result.stdout.rpartition("__rc=")
    return Result(int(rc.strip()), body)


def converse(host, user, argv, answers):
    """argv as `user`, through a pty, answering the password prompts."""
    stdin = "\n".join(answers)
    cmd = (
        f"printf %s {shlex.quote(stdin)} | runuser -u {user} -- "
        f"python3 -c {shlex.quote(PTY_DRIVER)} {shlex.join(argv)}"
    )
    return host.run(cmd)


@pytest.fixture(scope="module")
def askpass(client):
    """An SSH_ASKPASS program on the client that answers with a password file."""

    def make(name, password):
        client.run_test(f"install -m 0600 /dev/null /root/pw-{name}")
        client.run_test(f"printf %s {shlex.quote(password)} > /root/pw-{name}")
        script = f"#!/bin/sh\ncat /root/pw-{name}\n"
        client.run_test(f"printf %s {shlex.quote(script)} > /root/askpass-{name}")
        client.run_test(f"chmod 0700 /root/askpass-{name}")
        return f"/root/askpass-{name}"

    yield make
    client.run("rm -f /root/pw-* /root/askpass-*")


def ssh_password(client, askpass_program, user, address=HARDENED):
    args = ["ssh", "-v", *SSH_OPTIONS, "-o", "PreferredAuthentications=password"]
    args += ["-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1"]
    args += [f"{user}@{address}", "true"]
    env = f"SSH_ASKPASS={askpass_program} SSH_ASKPASS_REQUIRE=force DISPLAY=none "
    result = run(client, env + shlex.join(args) + " </dev/null")
    return result, result.out


def ssh_key(client, user, *options, command="id -un"):
    args = ["ssh", *SSH_OPTIONS, "-o", "BatchMode=yes", "-i", ADMIN_KEY, *options]
    result = run(client, shlex.join([*args, f"{user}@{HARDENED}", command]))
    return result, result.out


# -- sshd ------------------------------------------------------------------------------------


def test_sshd_configuration_passes_its_own_test(host):
    result = host.run("/usr/sbin/sshd -t")
    assert result.rc == 0, result.stderr


def test_a_password_login_from_the_client_works_where_passwords_are_allowed(client, askpass):
    """The method itself works: the client's own stock sshd takes the same password
    (so the refusals below are the hardened server's, not a broken client)."""
    password = secret("hardtest_password")
    client.run_test("id hardtest || useradd --create-home --shell /bin/bash hardtest")
    client.run_test(f"printf %s {shlex.quote('hardtest:' + password)} | chpasswd")
    result, out = ssh_password(client, askpass("client", password), "hardtest", "127.0.0.1")
    assert result.rc == 0, out


def test_password_login_refused_with_the_right_password(client, askpass):
    result, out = ssh_password(client, askpass("hardtest", secret("hardtest_password")), "hardtest")
    assert result.rc == 255, out
    assert "Authentications that can continue: publickey\r" in out or (
        "Authentications that can continue: publickey\n" in out
    ), out
    assert "Permission denied (publickey)" in out, out


def test_root_password_login_refused_with_roots_password(client, askpass):
    result, out = ssh_password(client, askpass("root", secret("root_password")), "root")
    assert result.rc == 255, out
    assert "Permission denied (publickey)" in out, out


def test_the_administrator_logs_in_with_the_key(client):
    result, out = ssh_key(client, "hardadmin")
    assert result.rc == 0, out
    assert result.out.strip().endswith("hardadmin"), out


def test_a_valid_key_of_a_user_outside_allowgroups_is_refused(host, client):
    """hardtest gets the administrator's public key: the key is right, the group is not."""
    key = client.check_output(f"cat {ADMIN_KEY}.pub")
    host.run_test("install -d -m 0700 -o hardtest -g hardtest /home/hardtest/.ssh")
    host.run_test(f"printf '%s\\n' {shlex.quote(key)} > /home/hardtest/.ssh/authorized_keys")
    host.run_test("chown hardtest:hardtest /home/hardtest/.ssh/authorized_keys")
    try:
        result, out = ssh_key(client, "hardtest")
        assert result.rc == 255, out
        assert "Permission denied" in out, out
        log = host.check_output("journalctl -u ssh --since -2min --no-pager")
        assert "not allowed because none of user's groups are listed in AllowGroups" in log
    finally:
        host.run("rm -f /home/hardtest/.ssh/authorized_keys")


@pytest.mark.parametrize(
    ("option", "value", "refusal"),
    [
        ("-c", "aes128-cbc", "no matching cipher found"),
        ("-c", "3des-cbc", "no matching cipher found"),
        # With an AEAD cipher no MAC is negotiated: a CTR cipher makes the MAC count.
        ("-m", "hmac-md5", "no matching MAC found"),
        ("-m", "hmac-sha1", "no matching MAC found"),
        (
            "-o",
            "KexAlgorithms=diffie-hellman-group14-sha1",
            "no matching key exchange method found",
        ),
    ],
)
def test_weak_algorithms_refused_by_a_real_handshake(client, option, value, refusal):
    extra = ["-c", "aes256-ctr"] if option == "-m" else []
    result, out = ssh_key(client, "hardadmin", *extra, option, value)
    assert result.rc == 255, out
    assert refusal in out, out


@pytest.mark.parametrize(
    ("option", "value"),
    [("-c", "aes256-gcm@openssh.com"), ("-m", "hmac-sha2-256-etm@openssh.com")],
)
def test_the_offered_algorithms_work(client, option, value):
    extra = ["-c", "aes256-ctr"] if option == "-m" else []
    result, out = ssh_key(client, "hardadmin", *extra, option, value)
    assert result.rc == 0, out


def test_the_banner_is_shown_before_login(client):
    _, out = ssh_key(client, "hardadmin")
    assert "Authorized use only" in out, out


def test_remote_port_forwarding_refused(client):
    """A forward the server must open (-R): with ExitOnForwardFailure the client
    gives up when sshd refuses it (DisableForwarding)."""
    result, out = ssh_key(
        client, "hardadmin", "-o", "ExitOnForwardFailure=yes", "-R", "127.0.0.1:18022:127.0.0.1:22"
    )
    assert result.rc == 255, out
    assert "remote port forwarding failed" in out, out


# -- PAM -------------------------------------------------------------------------------------


def test_pwquality_refuses_a_weak_password_through_passwd(host):
    current = secret("hardtest_password")
    result = converse(host, "hardtest", ["passwd"], [current, "clinchat1", "clinchat1"])
    assert "BAD PASSWORD" in result.stdout, result.stdout
    # The password did not change: su with the old one still works.
    ok = converse(host, "hardprobe", ["su", "hardtest", "-c", "true"], [current])
    assert ok.rc == 0, ok.stdout


def test_faillock_locks_after_repeated_failures(host):
    right = secret("hardtest_password")
    host.run_test("faillock --user hardtest --reset")
    try:
        before = converse(host, "hardprobe", ["su", "hardtest", "-c", "id -un"], [right])
        assert before.rc == 0 and "hardtest" in before.stdout, before.stdout
        for _ in range(DENY):
            wrong = converse(host, "hardprobe", ["su", "hardtest", "-c", "true"], ["not-" + right])
            assert wrong.rc != 0, wrong.stdout
        records = host.check_output("faillock --user hardtest")
        failures = [line for line in records.splitlines() if line.rstrip().endswith((" V", " I"))]
        assert len(failures) >= DENY, records
        after = converse(host, "hardprobe", ["su", "hardtest", "-c", "id -un"], [right])
        assert after.rc != 0, after.stdout
        assert "hardtest\r\n" not in after.stdout.split("assword:")[-1], after.stdout
    finally:
        host.run("faillock --user hardtest --reset")


# -- shells, cron and at -----------------------------------------------------------------------


def test_tmout_is_read_only_in_a_login_shell(host):
    result = host.run("runuser -l hardtest -c 'echo TMOUT=$TMOUT; (TMOUT=0); echo still=$TMOUT'")
    out = result.stdout + result.stderr
    assert "TMOUT=900" in out, out
    assert "readonly variable" in out, out
    assert "still=900" in out, out


def test_login_shells_get_umask_027(host):
    assert host.check_output("runuser -l hardtest -c umask").strip() == "0027"


def test_cron_and_at_are_for_root_only(host):
    for path in ("/etc/cron.allow", "/etc/at.allow"):
        allow = host.file(path)
        assert allow.content_string == "root\n"
        assert allow.user == "root" and allow.mode == 0o640
    assert not host.file("/etc/cron.deny").exists
    assert not host.file("/etc/at.deny").exists
    for name in ("cron.hourly", "cron.daily", "cron.weekly", "cron.monthly", "cron.d"):
        assert host.file(f"/etc/{name}").mode == 0o700, name


def test_core_dumps_are_off(host):
    assert host.file("/etc/systemd/coredump.conf.d/60-clinchat-harden.conf").contains(
        "^Storage=none"
    )
    assert host.check_output("runuser -l hardtest -c 'ulimit -H -c'").strip() == "0"


def test_network_sysctls_apply_in_the_container(host):
    """net.* are per network namespace: a container with its own network sets them."""
    assert host.check_output("sysctl -n net.ipv4.conf.all.accept_redirects") == "0"
    assert host.check_output("sysctl -n net.ipv4.tcp_syncookies") == "1"
    assert host.check_output("sysctl -n net.ipv4.conf.all.log_martians") == "1"


def test_audit_rules_are_written_and_immutable(host):
    rules = host.check_output("cat /etc/audit/rules.d/*.rules")
    for needle in ("-w /etc/shadow -p wa -k identity", "-w /etc/sudoers -p wa -k scope",
                   "path=/usr/bin/sudo", "-S adjtimex,settimeofday,clock_settime",
                   "-k perm_mod", "-w /var/log/wtmp", "-e 2"):  # fmt: skip
        assert needle in rules, needle
    # The rules compile (auditctl parses them without a kernel: -R needs one,
    # so augenrules' merge is checked instead).
    assert host.run("augenrules --check").rc in (0, 1)


def test_aide_database_exists_and_a_check_finds_a_change(host):
    """The database was made after every other control (none of the role's files is
    new to it), and a new file in /etc is reported. (Earlier test runs may have
    changed /etc's own mtime, so a clean exit status is not required.)"""
    host.run_test("test -s /var/lib/aide/clinchat-aide.db.gz")
    check = "aide --config /etc/aide/clinchat-aide.conf --check"
    clean = host.run(check)
    managed_files = (
        "/etc/profile.d/60-clinchat-tmout.sh",
        "/etc/sudoers.d/clinchat-harden",
        "/etc/cron.allow",
        "/etc/systemd/system/clinchat-aide-check.timer",
    )
    for managed in managed_files:
        assert managed not in clean.stdout, clean.stdout
    assert "/etc/clinchat-aide-probe" not in clean.stdout
    host.run_test("touch /etc/clinchat-aide-probe")
    try:
        dirty = host.run(check)
        assert dirty.rc != 0 and "/etc/clinchat-aide-probe" in dirty.stdout, dirty.stdout
    finally:
        host.run("rm -f /etc/clinchat-aide-probe")
    assert host.service("clinchat-aide-check.timer").is_enabled
