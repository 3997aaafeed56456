"""Lookup ``clinchat.appliance.age_recipient``: the age recipient (public key) of
an identity file on the controller, made with ``age-keygen`` the first time
(0600, like ``ansible.builtin.password`` makes a password file). The lab's
OpenBao snapshots are encrypted to it; a site gives its key holders' recipients
instead and keeps the identities off every server (roles/openbao/README.md).

    openbao_snapshot_age_recipients:
      - "{{ lookup('clinchat.appliance.age_recipient',
                   clinchat_secrets_dir ~ '/openbao-snapshot.agekey') }}"
"""

from __future__ import annotations

import os
import shutil
import subprocess

from ansible.errors import AnsibleLookupError
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = r"""
name: age_recipient
short_description: the age recipient of an identity file, made on first use
description:
  - Runs C(age-keygen -o PATH) when PATH does not exist (mode 0600, directory 0700),
    then returns C(age-keygen -y PATH).
options:
  _terms:
    description: identity file paths on the controller
    required: true
"""


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        keygen = shutil.which("age-keygen")
        if keygen is None:
            raise AnsibleLookupError(
                "age_recipient needs age-keygen on the controller (apt install age)"
            )
        recipients = []
        for term in terms:
            path = os.path.expanduser(str(term))
            try:
                if not os.path.exists(path):
                    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
                    subprocess.run([keygen, "-o", path], check=True, capture_output=True)  # noqa: S603
                answer = subprocess.run(  # noqa: S603
                    [keygen, "-y", path], check=True, capture_output=True, text=True
                )
            except subprocess.CalledProcessError as exc:
                raise AnsibleLookupError(
                    f"age-keygen failed on {path}: {exc.stderr.strip() if exc.stderr else exc}"
                ) from exc
            recipients.append(answer.stdout.strip())
        return recipients
