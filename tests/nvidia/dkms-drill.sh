#!/usr/bin/env bash
# The NVIDIA module build where the kernel headers match: a qemu lab VM (TCG)
# boots Debian 13's cloud kernel, roles base and nvidia (forced: the VM has no
# GPU) install the driver, the kernel's headers and DKMS from the bundle built
# with the driver, and DKMS builds and signs the open module for the kernel
# the VM runs, or the bundle's newer one (then the role reports the reboot).
# Then: `dkms status` says installed for it, modinfo finds the module and
# names the machine owner key as its signer, and (when that kernel runs)
# `modprobe nvidia` is refused for want of a GPU: loading needs one. Each step
# is timed.
#
# Run by `make nvidia-dkms-drill` (on demand, not in `make test`). Uses lab
# address 10.213.0.61 (qemu range) and the bundle in $NVIDIA_BUNDLE_DIR, served
# on :8089 (tests/nvidia/nvidia-bundle-server) so the lab's :8088 stays as it is.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
LAB="$REPO/tests/lab/clinchat-lab"
SERVER="$REPO/tests/nvidia/nvidia-bundle-server"   # :8089, beside the lab's :8088
NAME=${NVIDIA_DRILL_NAME:-lab-nvdrill}
ADDRESS=${NVIDIA_DRILL_ADDRESS:-10.213.0.61}
MEMORY=${NVIDIA_DRILL_MEMORY:-3072}
BUNDLE_DIR=${NVIDIA_BUNDLE_DIR:-/var/cache/clinchat/bundle-nvidia}
STATE=${CLINCHAT_LAB_STATE:-/var/lib/clinchat-lab}
KEY="$STATE/ssh/id_ed25519"
WORK=$(mktemp -d)
START=$(date +%s)

step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - START ))" "$*" >&2; }
on_vm() {
  ssh -i "$KEY" -o UserKnownHostsFile="$STATE/known_hosts" -o StrictHostKeyChecking=yes \
    -o LogLevel=ERROR -o ConnectTimeout=10 "root@$ADDRESS" "$@"
}
cleanup() {
  local rc=$?
  step "destroy $NAME"
  "$LAB" destroy "$NAME" >/dev/null || true
  "$SERVER" stop >/dev/null || true
  rm -rf "$WORK"
  printf '\nnvidia-dkms-drill: %s after %ss\n' "$([ $rc -eq 0 ] && echo PASSED || echo FAILED)" \
    "$(( $(date +%s) - START ))" >&2
  exit $rc
}
trap cleanup EXIT

test -f "$BUNDLE_DIR/manifest.json" || { echo "no bundle in $BUNDLE_DIR: make bundle-nvidia" >&2; exit 2; }
grep -q '"nvidia-open-kernel-dkms"' "$BUNDLE_DIR/manifest.json" \
  || { echo "$BUNDLE_DIR has no NVIDIA driver: build it with -e bundle_include_nvidia=true" >&2; exit 2; }

step "qemu image (rootfs --qemu)"
"$LAB" rootfs --qemu >/dev/null

step "create $NAME ($ADDRESS, qemu TCG, ${MEMORY} MB); the bundle with the driver on :8089"
"$LAB" create "$NAME" --ip "$ADDRESS" --type qemu --memory "$MEMORY" >/dev/null
"$SERVER" start "$BUNDLE_DIR" >&2

cat >"$WORK/hosts.yml" <<YAML
all:
  children:
    gpu:
      hosts:
        $NAME:
          ansible_host: $ADDRESS
          ansible_user: root
          ansible_ssh_private_key_file: $KEY
          ansible_ssh_extra_args: -o UserKnownHostsFile=$STATE/known_hosts
          ansible_python_interpreter: /usr/bin/python3
  vars:
    bundle_url: http://10.213.0.1:8089
    bundle_dir: $BUNDLE_DIR
    base_ntp_servers: [10.213.0.1]
YAML
cat >"$WORK/drill.yml" <<'YAML'
- name: Drill | base, then the NVIDIA driver forced on a VM without a GPU
  hosts: gpu
  gather_facts: true
  gather_subset: [min, virtual]
  roles:
    - role: base
    - role: nvidia
      vars:
        nvidia_force_install: true
YAML

kernel=$(on_vm uname -r)
step "the VM runs $kernel; ansible-playbook base + nvidia (the DKMS build runs in the apt step)"
export ANSIBLE_CONFIG="$REPO/ansible.cfg"
ansible-playbook -i "$WORK/hosts.yml" "$WORK/drill.yml" | tee "$WORK/run.log" | grep -E "^(TASK|ok|changed|fatal|failed)|MSG|msg|PLAY RECAP|$NAME +:" >&2

step "checks"
# The kernel DKMS must have built for: the newest of the flavour. When the
# bundle's kernel is newer than the VM's (the lab boots its VMs with the qemu
# image's own vmlinuz, which a reboot does not change), the role reports the
# reboot and the module is built for the bundle's kernel.
target=$(on_vm "ls /lib/modules | grep -- '-cloud-amd64\$' | sort -V | tail -1")
echo "running $kernel; newest installed kernel $target" >&2
status=$(on_vm dkms status -m nvidia-current-open)
echo "dkms status: $status" >&2
grep -Eq "^nvidia-current-open/[0-9.]+, $target, x86_64: installed" <<<"$status" \
  || { echo "FAIL: not installed for $target" >&2; exit 1; }
modinfo=$(on_vm modinfo -k "$target" nvidia-current-open)
grep -E "^(filename|version|signer|sig_key|sig_hashalgo|license):" <<<"$modinfo" >&2
grep -q "^filename: */lib/modules/$target/updates/dkms/nvidia-current-open.ko" <<<"$modinfo" \
  || { echo "FAIL: modinfo does not find the module for $target" >&2; exit 1; }
grep -q "^signer: *ClinChat DKMS module signing key ($NAME)" <<<"$modinfo" \
  || { echo "FAIL: the module is not signed with the host's machine owner key" >&2; exit 1; }
on_vm "stat -c '%a %U' /var/lib/dkms/mok.key" | grep -qx "600 root"
grep -q "Secure Boot is unknown" "$WORK/run.log"   # -kernel boot: no EFI variables

if [ "$target" != "$kernel" ]; then
  grep -q "REBOOT PENDING on $NAME: it runs $kernel, the module" "$WORK/run.log" \
    || { echo "FAIL: the role did not report the pending reboot" >&2; exit 1; }
  echo "the bundle's kernel $target is newer than the VM's $kernel: the role reported the reboot;" \
    "the lab cannot boot it (qemu -kernel), so modprobe is not tried" >&2
else
  step "loading needs a GPU: modprobe nvidia on a VM without one"
  if out=$(on_vm modprobe nvidia 2>&1); then
    echo "FAIL: the module loaded without a GPU: $out" >&2; exit 1
  fi
  echo "modprobe nvidia: $out" >&2
  on_vm "dmesg | grep -E 'NVRM' | tail -5" >&2 || true
  grep -qi "No such device" <<<"$out" || { echo "FAIL: refused for another reason" >&2; exit 1; }
fi

step "second run changes nothing"
ansible-playbook -i "$WORK/hosts.yml" "$WORK/drill.yml" >"$WORK/run2.log"
grep -E "^$NAME +:.* changed=0 " "$WORK/run2.log" >&2 \
  || { tail -40 "$WORK/run2.log" >&2; echo "FAIL: the second run changed something" >&2; exit 1; }
