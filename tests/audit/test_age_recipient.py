"""The collection's ``age_recipient`` lookup: it makes an identity once (0600, in a
0700 directory), returns its public key, gives the same key on every later call
(idempotent inventories), and what it returns really encrypts to that identity."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ansible_collections.clinchat.appliance.plugins.lookup.age_recipient import LookupModule


def test_the_identity_is_made_once_and_its_recipient_encrypts_to_it(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "openbao-snapshot.agekey"
    [first] = LookupModule().run([str(path)])
    assert first.startswith("age1") and len(first) == 62
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    made = path.read_text()
    [again] = LookupModule().run([str(path)])
    assert again == first and path.read_text() == made

    secret = b"a raft snapshot stands in here"
    sealed = subprocess.run(
        ["age", "--encrypt", "--recipient", first], input=secret, capture_output=True, check=True
    ).stdout
    assert secret not in sealed
    opened = subprocess.run(
        ["age", "--decrypt", "--identity", str(path)], input=sealed, capture_output=True, check=True
    ).stdout
    assert opened == secret


def test_two_paths_give_two_identities(tmp_path: Path) -> None:
    one, two = LookupModule().run([str(tmp_path / "a.agekey"), str(tmp_path / "b.agekey")])
    assert one != two
