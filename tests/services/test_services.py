"""Each private service is the real one, and locked down as the hosts' are."""

from __future__ import annotations

import base64
import ssl

import ldap3
import psycopg
import pytest
import redis

from tests.services.ldap import PrivateLdap
from tests.services.openbao import PrivateOpenBao
from tests.services.postgres import PrivatePostgres
from tests.services.redis import PrivateRedis


def test_redis_tls_acl_user_only(redis_server: PrivateRedis) -> None:
    port = redis_server.port
    # retry=None: redis-py would otherwise retry each refusal with backoff (~4.5 s)
    # no plaintext: the only port speaks TLS
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=3, retry=None).ping()
    tls = {
        "host": "127.0.0.1",
        "port": port,
        "ssl": True,
        "ssl_ca_certs": str(redis_server.ca_cert),
        "socket_timeout": 3,
        "retry": None,
    }
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(username="clinchat", password="wrong", **tls).ping()
    # the default user is off, whatever the password
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(password=redis_server.password, **tls).ping()
    client = redis.Redis.from_url(redis_server.url, ssl_ca_certs=str(redis_server.ca_cert))
    assert client.set("clinchat:test", "value", ex=60)
    assert client.get("clinchat:test") == b"value"
    assert client.acl_whoami() == "clinchat"
    assert client.config_get("save") == {"save": ""}
    client.close()


def test_openbao_transit_with_approle(openbao: PrivateOpenBao) -> None:
    token = openbao.login()
    with openbao.client(token) as api:
        plaintext = base64.b64encode(b"synthetic note").decode()
        encrypted = api.post("/transit/encrypt/clinchat", json={"plaintext": plaintext})
        assert encrypted.status_code == 200, encrypted.text
        ciphertext = encrypted.json()["data"]["ciphertext"]
        assert ciphertext.startswith("vault:v1:")
        decrypted = api.post("/transit/decrypt/clinchat", json={"ciphertext": ciphertext})
        assert decrypted.json()["data"]["plaintext"] == plaintext
        datakey = api.post("/transit/datakey/plaintext/clinchat", json={"bits": 256})
        assert len(base64.b64decode(datakey.json()["data"]["plaintext"])) == 32
        # nothing beyond the key's operations
        assert api.get("/sys/mounts").status_code == 403
        assert api.get("/transit/keys/clinchat").status_code == 403
        assert api.post("/transit/keys/other").status_code == 403
    with openbao.client("not-a-token") as api:
        assert api.post("/transit/encrypt/clinchat", json={"plaintext": plaintext}).is_error
    # the audit device from the configuration file records every request
    assert b"transit/encrypt/clinchat" in openbao.audit_log.read_bytes()


def test_ldap_starttls_bind_and_groups(ldap_server: PrivateLdap) -> None:
    tls = ldap3.Tls(ca_certs_file=str(ldap_server.ca_cert), validate=ssl.CERT_REQUIRED)
    server = ldap3.Server(ldap_server.url, tls=tls, get_info=ldap3.NONE, connect_timeout=5)
    clin1 = ldap_server.user_dn("clin1")

    def bind(dn: str | None, password: str | None, starttls: bool = True) -> ldap3.Connection:
        conn = ldap3.Connection(server, dn, password, receive_timeout=5)
        conn.open()
        if starttls:
            assert conn.start_tls()
        conn.bind()
        return conn

    # a simple bind without TLS is refused before the password is even checked
    plain = bind(clin1, ldap_server.users["clin1"], starttls=False)
    assert plain.result["description"] == "confidentialityRequired"
    assert bind(clin1, "wrong").result["description"] == "invalidCredentials"
    anonymous = bind(None, None)
    assert not anonymous.search(ldap_server.base_dn, "(uid=*)")

    conn = bind(clin1, ldap_server.users["clin1"])
    assert conn.bound
    conn.search(f"ou=groups,{ldap_server.base_dn}", f"(member={clin1})", attributes=["cn"])
    assert [entry.entry_dn for entry in conn.entries] == [ldap_server.group_dn("clinicians")]
    conn.search(ldap_server.base_dn, "(uid=admin1)", attributes=["cn", "userPassword"])
    assert conn.entries[0].cn.value == "Test Knowledge-Base Admin"
    assert conn.entries[0].entry_attributes_as_dict["userPassword"] == []  # hashes hidden

    service = bind(ldap_server.bind_dn, ldap_server.bind_password)
    service.search(f"ou=people,{ldap_server.base_dn}", "(uid=*)", attributes=["uid"])
    assert sorted(entry.uid.value for entry in service.entries) == sorted(ldap_server.users)
    for uid, password in ldap_server.users.items():
        assert bind(ldap_server.user_dn(uid), password).bound
    service.search(
        f"ou=groups,{ldap_server.base_dn}",
        f"(member={ldap_server.user_dn('nogroup1')})",
    )
    assert service.entries == []


def test_pgvector_hnsw(postgres: PrivatePostgres) -> None:
    postgres.create_extension("vector")
    with psycopg.connect(
        host="127.0.0.1",
        port=postgres.port,
        dbname=postgres.database,
        user=postgres.user,
        password=postgres.password,
        sslmode="verify-full",
        sslrootcert=str(postgres.pki.ca_cert),
    ) as conn:
        conn.execute("CREATE TABLE chunks (id int PRIMARY KEY, embedding vector(3))")
        conn.execute(
            "INSERT INTO chunks VALUES (1, '[1,0,0]'), (2, '[0,1,0]'), (3, '[0,0,1]'),"
            " (4, '[0.7,0.7,0]')"
        )
        conn.execute("CREATE INDEX ON chunks USING hnsw (embedding vector_cosine_ops)")
        conn.execute("SET enable_seqscan = off")
        query = "SELECT id FROM chunks ORDER BY embedding <=> '[0.1,0.9,0.05]' LIMIT 1"
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN {query}"))
        assert "chunks_embedding_idx" in plan
        assert conn.execute(query).fetchone() == (2,)
