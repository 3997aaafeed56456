"""openbao: encrypted raft snapshots and the restore (roles/openbao, "Snapshots").

The timer's service signs in with its own AppRole (which can read a snapshot
and nothing else), writes the snapshot age-encrypted to the scenario's
recipient, prunes, and reports its time for the monitoring. Then the data
directory is lost and playbooks/restore.yml brings the cluster back from the
newest snapshot: the original root token and unseal keys work again, a secret
written before the snapshot is there, one written after it is not, and a
ciphertext made before decrypts with the restored transit key.

Runs after test_openbao.py (file order): the restore replaces the cluster."""

import base64
import gzip
import io
import json
import secrets
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
from labtest import SECRETS_DIR, lab_host
from test_openbao import BAO, LAB_STATE, admin, init_output, playbook

SNAPSHOTS = "/var/backups/openbao"
SERVICE = "clinchat-openbao-snapshot"
IDENTITY = SECRETS_DIR / "openbao-snapshot.agekey"
REPO = Path(__file__).resolve().parents[3]
ROOTFS = LAB_STATE / "machines" / BAO / "rootfs"
ARTIFACTS = REPO / "artifacts" / "openbao"


@pytest.fixture(scope="module")
def bao():
    return lab_host(BAO)


def snapshots(bao) -> list[str]:
    out = bao.check_output(
        f"find {SNAPSHOTS} -maxdepth 1 -name 'openbao-*.snap.age' -printf '%f\\n'"
    )
    return sorted(out.split())


def take_snapshot(bao) -> str:
    before = set(snapshots(bao))
    started = bao.run(f"systemctl start {SERVICE}.service")
    assert started.rc == 0, bao.run(f"journalctl -u {SERVICE} -n 30 --no-pager").stdout
    new = sorted(set(snapshots(bao)) - before)
    assert len(new) == 1, new
    return new[0]


def decrypt(name: str) -> bytes:
    """With the identity on the controller (age-keygen made it; the host never had it)."""
    return subprocess.run(
        ["age", "--decrypt", "--identity", str(IDENTITY), str(ROOTFS / SNAPSHOTS[1:] / name)],
        capture_output=True,
        check=True,
    ).stdout


def test_the_timer_is_enabled_and_the_converge_took_a_first_snapshot(bao):
    assert bao.service(f"{SERVICE}.timer").is_enabled
    assert bao.service(f"{SERVICE}.timer").is_running
    assert snapshots(bao), "the converge took no snapshot"
    directory = bao.file(SNAPSHOTS)
    assert (directory.user, directory.mode) == ("root", 0o700)


def test_a_snapshot_is_encrypted_to_the_recipient_only(bao):
    name = take_snapshot(bao)
    assert bao.file(f"{SNAPSHOTS}/{name}").mode == 0o600
    raw = (ROOTFS / SNAPSHOTS[1:] / name).read_bytes()
    assert raw.startswith(b"age-encryption.org/v1\n-> X25519 ")
    assert b"meta.json" not in raw and not raw.startswith(b"\x1f\x8b")
    clear = decrypt(name)
    # A raft snapshot: a gzipped tar of meta.json, state.bin and their SHA256SUMS.
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(clear))) as archive:
        assert {"meta.json", "state.bin", "SHA256SUMS"} <= set(archive.getnames())
    # The clear snapshot lived only in the service's tmpfs, gone with it.
    assert not bao.file(f"/run/{SERVICE}").exists
    recipients = bao.file("/etc/openbao/snapshot-recipients.txt").content_string.split()
    mine = subprocess.run(
        ["age-keygen", "-y", str(IDENTITY)], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert recipients == [mine]


def test_the_snapshot_approle_reads_snapshots_and_nothing_else(bao):
    # On the host, as the service would: the secret id it unwrapped, no secret in argv.
    script = r"""
export BAO_ADDR=https://mol-bao:8200 BAO_CACERT=/etc/clinchat/pki/ca.crt
export BAO_TOKEN="$(bao write -field=token auth/approle/login \
  role_id=@/etc/clinchat/credentials/openbao-snapshot/role_id \
  secret_id=@/var/lib/clinchat-openbao-snapshot/secret_id)"
bao token lookup -format=json | jq -c '.data.policies'
bao read clinchat/data/app >/dev/null 2>&1 && echo kv-read || echo kv-refused
bao list sys/policies/acl >/dev/null 2>&1 && echo policies-read || echo policies-refused
bao operator raft snapshot save /dev/null >/dev/null 2>&1 \
  && echo snapshot-ok || echo snapshot-refused
bao token revoke -self >/dev/null
"""
    out = bao.check_output("bash -c %s", script).split()
    assert json.loads(out[0]) == ["clinchat-openbao-snapshot", "default"]
    assert out[1:] == ["kv-refused", "policies-refused", "snapshot-ok"]


def test_old_snapshots_are_pruned_and_the_time_is_reported(bao):
    # 170 old snapshots of this node and one of another: the newest 168 of this node stay.
    bao.check_output(
        f"for i in $(seq 100 269); do "
        f"touch {SNAPSHOTS}/openbao-{BAO}-20000101T000${{i}}Z.snap.age; done; "
        f"touch {SNAPSHOTS}/openbao-other-node-20000101T000000Z.snap.age; "
        "install -d -m 0755 /var/lib/prometheus/node-exporter"
    )
    before = time.time()
    name = take_snapshot(bao)
    names = snapshots(bao)
    mine = [n for n in names if n.startswith(f"openbao-{BAO}-")]
    assert len(mine) == 168 and mine[-1] == name
    assert f"openbao-{BAO}-20000101T000100Z.snap.age" not in names
    assert "openbao-other-node-20000101T000000Z.snap.age" in names
    metric = bao.file("/var/lib/prometheus/node-exporter/clinchat_openbao_snapshot.prom")
    assert metric.mode == 0o644
    gauge = "clinchat_openbao_snapshot_last_success_timestamp_seconds"
    value = float(metric.content_string.split(f"{gauge} ")[-1])
    assert before - 5 <= value <= time.time() + 5
    bao.check_output(
        f"rm -f {SNAPSHOTS}/openbao-{BAO}-20000101T* {SNAPSHOTS}/openbao-other-node-*; "
        "rm -rf /var/lib/prometheus/node-exporter"
    )


def restore(*extra: str) -> subprocess.CompletedProcess:
    return playbook(
        REPO / "playbooks" / "restore.yml",
        *("-e", "restore_vault=true", "-e", "restore_db=false"),
        *extra,
    )


def test_the_cluster_comes_back_from_the_snapshot_after_its_data_is_lost(bao):
    root = init_output()["root_token"]
    marker = secrets.token_hex(16)
    assert admin("POST", "clinchat/data/drill", {"data": {"marker": marker}}, root)[0] == 200
    plaintext = base64.b64encode(b"a value sealed before the snapshot").decode()
    status, answer = admin("POST", "transit/encrypt/clinchat", {"plaintext": plaintext}, root)
    assert status == 200
    ciphertext = answer["data"]["ciphertext"]
    take_snapshot(bao)
    later = f"clinchat/data/after-{marker}"
    assert admin("POST", later, {"data": {"marker": "later"}}, root)[0] == 200

    # A node that holds data is refused without restore_overwrite.
    refused = restore("-e", f"restore_vault_identity={IDENTITY}")
    assert refused.returncode != 0
    said = " ".join((refused.stdout + refused.stderr).split())
    assert f"OpenBao on {BAO} is initialised and may hold data" in said, said[-3000:]

    # The data is lost.
    bao.check_output("systemctl stop openbao && find /var/lib/openbao -mindepth 1 -delete")
    started = time.monotonic()
    done = restore("-e", f"restore_vault_identity={IDENTITY}")
    seconds = time.monotonic() - started
    assert done.returncode == 0, (
        "\n".join(line for line in done.stdout.splitlines() if "fatal:" in line or "FAILED" in line)
        + done.stdout[-2000:]
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "restore-drill.json").write_text(
        json.dumps({"restore_playbook_seconds": round(seconds, 1)}, indent=2) + "\n"
    )

    assert admin("GET", "sys/health")[0] == 200
    # The original root token, and the original keys unsealed it (the lab file is unchanged).
    status, answer = admin("GET", "clinchat/data/drill", token=root)
    assert status == 200 and answer["data"]["data"]["marker"] == marker
    assert admin("GET", later, token=root)[0] == 404
    status, answer = admin("POST", "transit/decrypt/clinchat", {"ciphertext": ciphertext}, root)
    assert status == 200 and answer["data"]["plaintext"] == plaintext
    # Neither the identity nor the clear snapshot stayed on the host.
    assert not bao.file("/run/clinchat-openbao-restore").exists
    identity = IDENTITY.read_text().split("AGE-SECRET-KEY-")[1].split()[0]
    found = subprocess.run(
        ["grep", "-rlaF", "--exclude-dir=proc", "--exclude-dir=sys", "-e", identity, str(ROOTFS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert found.returncode == 1, found.stdout
    # And the restored cluster takes snapshots again.
    take_snapshot(bao)
