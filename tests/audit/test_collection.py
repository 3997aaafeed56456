"""The collection's version is the project's; audit.yml runs every stage of site.yml."""

from __future__ import annotations

import tomllib

import yaml

from .controls import REPO

COLLECTION = REPO / "collections/ansible_collections/clinchat/appliance"


def test_galaxy_version_is_the_projects() -> None:
    galaxy = yaml.safe_load((COLLECTION / "galaxy.yml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert (galaxy["namespace"], galaxy["name"]) == ("clinchat", "appliance")
    assert galaxy["version"] == project["version"]


def _imports(playbook: str) -> list[str]:
    plays = yaml.safe_load((REPO / playbook).read_text())
    base = (REPO / playbook).parent
    return [
        str((base / play["ansible.builtin.import_playbook"]).resolve().relative_to(REPO))
        for play in plays
        if "ansible.builtin.import_playbook" in play
    ]


def test_audit_imports_the_stages_of_site_in_its_order() -> None:
    stages = _imports("site.yml")
    audit = _imports("playbooks/audit.yml")
    assert audit[-1] == "playbooks/audit/verdict.yml"
    assert audit[:-1] == stages, (
        "a stage of site.yml must be audited too: add it to playbooks/audit.yml"
    )


def test_every_stage_is_audited_with_the_app_controls_on() -> None:
    plays = yaml.safe_load((REPO / "playbooks/audit.yml").read_text())
    stages = [p for p in plays if "ansible.builtin.import_playbook" in p][:-1]
    assert all(p.get("vars") == {"clinchat_audit": True} for p in stages)
    # No stage asks for more privilege in an audit than its converge does.
    assert "become" not in (REPO / "playbooks/audit.yml").read_text()
    assert "become" not in (REPO / "playbooks/audit/verdict.yml").read_text()
