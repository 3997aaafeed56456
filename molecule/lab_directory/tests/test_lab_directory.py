"""lab_directory: from the app host, over ldaps with the lab CA and hostname
verification, the app's account finds clin1 and its groups and clin1 signs in;
a wrong password, anonymous access, reading passwords, plaintext LDAP,
StartTLS, TLS 1.1 and an unknown CA are refused; sslyze finds LDAPS Mozilla
intermediate compliant."""

import shlex

import pytest
from labtest import PKI_DIR, lab_host, secret
from tlscheck import mozilla_intermediate

DIRECTORY = "10.213.0.39"
URL = f"ldaps://{DIRECTORY}"
CA = "/etc/clinchat/pki/ca.crt"
SUFFIX = "dc=hospital,dc=test"
BIND_DN = f"cn=clinchat-app,ou=services,{SUFFIX}"
CLIN1 = f"uid=clin1,ou=people,{SUFFIX}"
SERVER_DOWN = 254  # ldap-utils' 255 (see ldap)


def ldap(host, command, *args, dn=None, password=None, url=URL, ca=CA, reqcert="demand"):
    """Run an ldap-utils command with the CA file (libldap checks the host name)."""
    argv = [command, "-x", "-H", url, "-o", "nettimeout=5"]
    if dn is not None:
        argv += ["-D", dn, "-w", password]
    argv += list(args)
    # ldap-utils exit 255 when they cannot connect (-1, "Can't contact LDAP
    # server"); testinfra's SSH backend takes 255 for a failed ssh and raises,
    # so the shell hands that status back as SERVER_DOWN.
    return host.run(
        f"LDAPTLS_CACERT={shlex.quote(ca)} LDAPTLS_REQCERT={reqcert} {shlex.join(argv)}; "
        f"rc=$?; [ $rc -ne 255 ] || rc={SERVER_DOWN}; exit $rc"
    )


def search(host, base, filt, *attrs, **kw):
    return ldap(host, "ldapsearch", "-LLL", "-b", base, filt, *attrs, **kw)


def as_app(host, base, filt, *attrs):
    return search(host, base, filt, *attrs, dn=BIND_DN, password=secret("ldap_bind_password"))


@pytest.fixture(scope="module")
def client():
    return lab_host("mol-dir-client")


def test_the_app_account_finds_clin1(client):
    result = as_app(client, f"ou=people,{SUFFIX}", "(uid=clin1)", "cn")
    assert result.rc == 0, result.stderr
    assert f"dn: {CLIN1}" in result.stdout
    assert "cn: Dr Test Clinician" in result.stdout


def test_the_app_account_finds_clin1s_groups_by_member(client):
    result = as_app(client, f"ou=groups,{SUFFIX}", f"(member={CLIN1})", "1.1")
    assert result.rc == 0, result.stderr
    groups = [line for line in result.stdout.splitlines() if line.startswith("dn: ")]
    assert groups == [f"dn: cn=clinicians,ou=groups,{SUFFIX}"]


@pytest.mark.parametrize(
    ("uid", "group"), [("admin1", "kb-admins"), ("audit1", "auditors"), ("nogroup1", None)]
)
def test_the_other_people_have_their_groups(client, uid, group):
    result = as_app(client, f"ou=groups,{SUFFIX}", f"(member=uid={uid},ou=people,{SUFFIX})", "1.1")
    assert result.rc == 0, result.stderr
    expected = [f"dn: cn={group},ou=groups,{SUFFIX}"] if group else []
    assert [line for line in result.stdout.splitlines() if line.startswith("dn: ")] == expected


def test_clin1_binds_with_its_password(client):
    result = ldap(client, "ldapwhoami", dn=CLIN1, password=secret("ldap_user_clin1"))
    assert result.rc == 0, result.stderr
    assert result.stdout.strip() == f"dn:{CLIN1}"


def test_a_wrong_password_is_refused(client):
    result = ldap(client, "ldapwhoami", dn=CLIN1, password="not-the-password")
    assert result.rc == 49, result.stderr
    assert "Invalid credentials" in result.stderr


def test_an_anonymous_search_is_refused(client):
    result = search(client, SUFFIX, "(uid=clin1)")
    assert result.rc != 0
    assert "clin1" not in result.stdout
    assert "anonymous bind disallowed" in result.stderr, result.stderr


def test_the_app_account_reads_no_password(client):
    result = as_app(client, SUFFIX, "(|(uid=clin1)(cn=clinchat-app))", "userPassword", "uid")
    assert result.rc == 0, result.stderr
    assert f"dn: {CLIN1}" in result.stdout  # the entry is there, its password is not
    assert "userPassword" not in result.stdout


def test_passwords_are_stored_as_ssha(client):
    """root on the directory host (ldapi, EXTERNAL) sees the stored form."""
    directory = lab_host("mol-dir")
    result = directory.run(
        f"ldapsearch -LLL -Q -Y EXTERNAL -H ldapi:/// -b {SUFFIX} '(userPassword=*)' userPassword"
    )
    assert result.rc == 0, result.stderr
    values = [line for line in result.stdout.splitlines() if line.startswith("userPassword")]
    assert len(values) == 6  # five people (icu1 included) and the app's account
    # Hashes are binary-safe base64 in LDIF (userPassword:: e1NTSEF9 is "{SSHA}").
    assert all(value.startswith("userPassword:: e1NTSEF9") for value in values), values


def test_plaintext_ldap_is_refused(client):
    result = search(
        client,
        SUFFIX,
        "(uid=clin1)",
        url=f"ldap://{DIRECTORY}:389",
        dn=BIND_DN,
        password=secret("ldap_bind_password"),
    )
    assert result.rc == SERVER_DOWN
    assert "Can't contact LDAP server" in result.stderr, result.stderr
    refused = client.run(
        f"python3 -c 'import socket; socket.create_connection((\"{DIRECTORY}\", 389), 5)'"
    )
    assert "ConnectionRefusedError" in refused.stderr, refused.stderr


def test_starttls_is_not_possible(client):
    result = ldap(
        client,
        "ldapwhoami",
        "-ZZ",
        url=f"ldap://{DIRECTORY}",
        dn=CLIN1,
        password=secret("ldap_user_clin1"),
    )
    assert result.rc != 0
    assert "ldap_start_tls" in result.stderr, result.stderr


def s_client(host, *args):
    argv = ["openssl", "s_client", "-connect", f"{DIRECTORY}:636", "-servername", DIRECTORY, *args]
    return host.run(f"echo | {shlex.join(argv)}")


def test_tls_1_1_is_refused_by_the_server(client):
    # SECLEVEL=0: this client would speak TLS 1.1; the server's alert refuses it.
    result = s_client(client, "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
    assert result.rc != 0
    assert "alert protocol version" in result.stdout + result.stderr


def test_tls_1_2_is_accepted_with_a_verified_certificate(client):
    result = s_client(
        client, "-tls1_2", "-CAfile", CA, "-verify_return_error", "-verify_ip", DIRECTORY
    )
    assert result.rc == 0, result.stderr
    assert "Protocol: TLSv1.2" in result.stdout
    assert "Verify return code: 0 (ok)" in result.stdout


def test_a_certificate_from_another_ca_is_refused(client):
    other = "/root/other-ca"
    made = client.run(
        f"mkdir -p {other} && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
        f"-nodes -days 1 -subj /CN=another-ca -keyout {other}/ca.key -out {other}/ca.crt"
    )
    assert made.rc == 0, made.stderr
    result = as_app(client, f"ou=people,{SUFFIX}", "(uid=clin1)")
    assert result.rc == 0  # the same search with the lab CA works
    refused = search(
        client,
        f"ou=people,{SUFFIX}",
        "(uid=clin1)",
        ca=f"{other}/ca.crt",
        dn=BIND_DN,
        password=secret("ldap_bind_password"),
    )
    assert refused.rc == SERVER_DOWN
    assert "clin1" not in refused.stdout
    assert "Can't contact LDAP server" in refused.stderr, refused.stderr


def test_hostname_verification_is_on(client):
    """A name the certificate does not carry, for the right address, is refused."""
    alias = "not-the-directory.test"
    added = client.run(f"grep -q {alias} /etc/hosts || echo '{DIRECTORY} {alias}' >> /etc/hosts")
    assert added.rc == 0, added.stderr
    creds = {"dn": BIND_DN, "password": secret("ldap_bind_password"), "url": f"ldaps://{alias}"}
    # Without the name check (allow) the same search works: only the name fails it.
    unchecked = search(client, f"ou=people,{SUFFIX}", "(uid=clin1)", reqcert="allow", **creds)
    assert unchecked.rc == 0, unchecked.stderr
    checked = search(client, f"ou=people,{SUFFIX}", "(uid=clin1)", **creds)
    assert checked.rc == SERVER_DOWN
    assert "clin1" not in checked.stdout
    assert "Can't contact LDAP server" in checked.stderr, checked.stderr


def test_ldaps_meets_mozilla_intermediate():
    """sslyze from the controller: protocols, suites, curves, certificate lifetime."""
    mozilla_intermediate(DIRECTORY, 636, ca_file=str(PKI_DIR / "ca.crt"))
