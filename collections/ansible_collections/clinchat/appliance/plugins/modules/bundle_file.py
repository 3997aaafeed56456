#!/usr/bin/python
"""clinchat.appliance.bundle_file: one file of the offline bundle, proven authentic first."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.urls import open_url

DOCUMENTATION = r"""
module: bundle_file
short_description: fetch a file of the offline bundle after checking the bundle's signed manifest
description:
  - Downloads the bundle's C(SHA256SUMS) and its detached signature C(SHA256SUMS.gpg), and
    checks the signature against the bundle's public key with C(sqv) (apt's verifier on
    Debian 13) or C(gpgv). A manifest that is not signed by that key fails the task.
  - Then downloads O(path) and compares its SHA-256 with the signed manifest; a file whose
    hash differs, or that the manifest does not list, fails the task and is not written.
  - O(dest) is replaced (atomically) only when its content differs; in check mode nothing
    is written and the result says whether it would be.
version_added: "0.1.0"
options:
  url:
    description: Where the hosts reach the bundle (C(bundle_url)).
    type: str
    required: true
  keyring:
    description: The bundle's public key on the host (armored), the key apt's source trusts.
    type: path
    required: true
  path:
    description:
      - The file's path inside the bundle, as C(SHA256SUMS) names it (C(requirements/app.txt)).
    type: str
    required: true
  dest:
    description: Where the verified file is written on the host.
    type: path
    required: true
  mode:
    description: Mode of O(dest).
    type: raw
    default: "0644"
  timeout:
    description: Seconds for each download.
    type: int
    default: 60
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
author: ClinChat Appliance
"""

EXAMPLES = r"""
- name: "App | PATCH | Ensure the app's locked requirements come from the signed bundle"
  clinchat.appliance.bundle_file:
    url: "{{ app_bundle_url }}"
    keyring: /etc/apt/keyrings/clinchat-bundle.asc
    path: requirements/app.txt
    dest: /opt/clinchat/app/0.1.0+b1a2b3c4d5e6.requirements.txt
"""

RETURN = r"""
sha256:
  description: The SHA-256 of the file, as the signed manifest gives it.
  type: str
  returned: success
signer:
  description: The fingerprint of the key that signed the manifest.
  type: str
  returned: success
"""

_SUMS_LINE = re.compile(r"^([0-9a-f]{64})  (.+)$")


def download(module, url, timeout):
    try:
        with open_url(url, timeout=timeout, follow_redirects="safe") as response:
            return response.read()
    except Exception as error:  # noqa: BLE001 - every transport error says the same
        module.fail_json(msg=f"cannot download {url}: {error}")
        raise  # unreachable: fail_json exits


def dearmor(armored):
    """The binary key block of an ASCII-armored key (for gpgv, which reads no armor)."""
    text = armored.decode("ascii", "replace")
    body = text.split("-----BEGIN PGP PUBLIC KEY BLOCK-----", 1)[-1]
    body = body.split("-----END PGP PUBLIC KEY BLOCK-----", 1)[0]
    payload = body.split("\n\n", 1)[-1] if "\n\n" in body else body
    lines = [line.strip() for line in payload.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("=")]  # the CRC line
    return base64.b64decode("".join(lines))


def verify(module, keyring, sums, signature, workdir):
    """The signer's fingerprint when `signature` is a valid signature of `sums` by a key
    of `keyring`; fails the module otherwise."""
    sqv = module.get_bin_path("sqv")
    if sqv:
        rc, out, err = module.run_command([sqv, "--keyring", keyring, signature, sums])
        if rc == 0:
            return out.strip().splitlines()[0] if out.strip() else "?"
    else:
        gpgv = module.get_bin_path("gpgv")
        if not gpgv:
            module.fail_json(msg="neither sqv nor gpgv is installed: cannot check the bundle")
        binary = os.path.join(workdir, "keyring.gpg")
        with open(keyring, "rb") as handle, open(binary, "wb") as out_handle:
            out_handle.write(dearmor(handle.read()))
        rc, out, err = module.run_command(
            [gpgv, "--status-fd", "1", "--keyring", binary, signature, sums]
        )
        if rc == 0:
            found = re.search(r"VALIDSIG ([0-9A-F]{40})", out)
            return found.group(1) if found else "?"
    module.fail_json(
        msg=f"the bundle's SHA256SUMS is not signed by the key in {keyring}: refusing the "
        "bundle (a tampered manifest, or a bundle signed by another key)",
        verifier_output=(out + err).strip()[-2000:],
    )
    return None


def file_sha256(path):
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def main():
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "keyring": {"type": "path", "required": True},
            "path": {"type": "str", "required": True},
            "dest": {"type": "path", "required": True},
            "mode": {"type": "raw", "default": "0644"},
            "timeout": {"type": "int", "default": 60},
        },
        supports_check_mode=True,
    )
    url = module.params["url"].rstrip("/")
    keyring, path, dest = module.params["keyring"], module.params["path"], module.params["dest"]
    if not os.path.isfile(keyring):
        module.fail_json(
            msg=f"the bundle's public key {keyring} is missing (role base puts it there)"
        )
    workdir = tempfile.mkdtemp(prefix="clinchat-bundle-")
    try:
        sums = os.path.join(workdir, "SHA256SUMS")
        signature = os.path.join(workdir, "SHA256SUMS.gpg")
        with open(sums, "wb") as handle:
            handle.write(download(module, f"{url}/SHA256SUMS", module.params["timeout"]))
        with open(signature, "wb") as handle:
            handle.write(download(module, f"{url}/SHA256SUMS.gpg", module.params["timeout"]))
        signer = verify(module, keyring, sums, signature, workdir)
        manifest = {}
        with open(sums, encoding="utf-8") as handle:
            for line in handle:
                match = _SUMS_LINE.match(line.rstrip("\n"))
                if match:
                    manifest[match.group(2)] = match.group(1)
        expected = manifest.get(path)
        if expected is None:
            module.fail_json(msg=f"{path} is not in the bundle's signed SHA256SUMS")
        result = {"sha256": expected, "signer": signer, "dest": dest}
        if os.path.isfile(dest) and file_sha256(dest) == expected:
            changed = module.set_fs_attributes_if_different(
                module.load_file_common_arguments({"path": dest, "mode": module.params["mode"]}),
                False,
            )
            module.exit_json(changed=changed, msg=f"{dest} is {path} of the bundle", **result)
        content = download(module, f"{url}/{path}", module.params["timeout"])
        actual = hashlib.sha256(content).hexdigest()
        if actual != expected:
            module.fail_json(
                msg=f"{path} from {url} has SHA-256 {actual}, the signed SHA256SUMS says "
                f"{expected}: refusing it (a tampered or stale file)",
                **result,
            )
        if not module.check_mode:
            staged = os.path.join(workdir, "staged")
            with open(staged, "wb") as handle:
                handle.write(content)
            module.atomic_move(staged, dest)
            module.set_fs_attributes_if_different(
                module.load_file_common_arguments({"path": dest, "mode": module.params["mode"]}),
                True,
            )
        module.exit_json(changed=True, msg=f"{dest} written from {path} of the bundle", **result)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
