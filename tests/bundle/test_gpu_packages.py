"""Which Debian packages and extras the bundle takes for gpu hosts: a role's
__<role>_gpu_packages lists (python3-torch) only when the inventory has gpu
hosts (bundle_include_serving), and the serving extra that bundle_serving_torch
names. Only the role's inputs step runs (--tags bundle_inputs): no root, no
network, a few seconds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from .conftest import playbook


@pytest.fixture(scope="module")
def roles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One role with a plain and a gpu-only package list."""
    roles = tmp_path_factory.mktemp("roles")
    (roles / "demo/vars").mkdir(parents=True)
    (roles / "demo/vars/Debian-13.yml").write_text(
        "---\n__demo_packages: [jq]\n__demo_gpu_packages: [python3-torch]\n"
        "__demo_site_dir: lib/python3.13/site-packages\n"
    )
    return roles


def inputs(roles_dir: Path, tmp_path: Path, **extra: str) -> tuple[dict[str, list[str]], str]:
    args = ["-e", f"bundle_roles_dir={roles_dir}", "-e", f"bundle_dir={tmp_path / 'bundle'}"]
    for name, value in extra.items():
        args += ["-e", f"{name}={value}"]
    run = playbook(*args, "--tags", "bundle_inputs")
    assert run.rc == 0, run.output[-4000:]
    by_role = re.search(r'"packages by role: (\{.*\})"', run.output)
    extras = re.search(r'"wheelhouse: CPython [0-9.]+, extras: ([^"]*)"', run.output)
    assert by_role and extras, run.output[-4000:]
    return ast.literal_eval(by_role.group(1)), extras.group(1)


def test_no_gpu_hosts_no_gpu_packages_and_no_serving_extra(roles_dir: Path, tmp_path: Path):
    by_role, extras = inputs(roles_dir, tmp_path, bundle_include_serving="false")
    assert by_role == {"demo": ["jq"]}
    assert "serving" not in extras


def test_gpu_hosts_bring_the_gpu_packages_and_the_runtime_extra(roles_dir: Path, tmp_path: Path):
    by_role, extras = inputs(roles_dir, tmp_path, bundle_include_serving="true")
    assert by_role == {"demo": ["jq", "python3-torch"]}
    assert extras.split(", ")[0] == "serving-runtime"


def test_torch_from_the_wheelhouse_takes_the_serving_extra(roles_dir: Path, tmp_path: Path):
    _, extras = inputs(
        roles_dir, tmp_path, bundle_include_serving="true", bundle_serving_torch="wheelhouse"
    )
    assert extras.split(", ")[0] == "serving"


def test_an_unknown_torch_source_is_refused(roles_dir: Path, tmp_path: Path):
    run = playbook(
        "-e",
        f"bundle_roles_dir={roles_dir}",
        "-e",
        "bundle_serving_torch=conda",
        "--tags",
        "bundle_inputs",
    )
    assert run.rc != 0
    assert "bundle_serving_torch" in run.output


@pytest.fixture(scope="module")
def nvidia_roles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A role named nvidia: its __nvidia_gpu_packages is the NVIDIA driver."""
    roles = tmp_path_factory.mktemp("roles")
    (roles / "nvidia/vars").mkdir(parents=True)
    (roles / "nvidia/vars/Debian-13.yml").write_text(
        "---\n__nvidia_gpu_packages: [nvidia-smi]\n__nvidia_kernel_flavours: [amd64]\n"
    )
    (roles / "demo/vars").mkdir(parents=True)
    (roles / "demo/vars/Debian-13.yml").write_text(
        "---\n__demo_packages: [jq]\n__demo_gpu_packages: [python3-torch]\n"
    )
    return roles


def test_cpu_gpu_hosts_get_no_nvidia_driver(nvidia_roles_dir: Path, tmp_path: Path):
    """The lab's gpu host runs Debian's CPU torch: torch, but no driver."""
    by_role, _ = inputs(nvidia_roles_dir, tmp_path, bundle_include_serving="true")
    assert by_role == {"demo": ["jq", "python3-torch"], "nvidia": []}


def test_cuda_torch_brings_the_nvidia_driver(nvidia_roles_dir: Path, tmp_path: Path):
    by_role, _ = inputs(
        nvidia_roles_dir, tmp_path, bundle_include_serving="true", bundle_serving_torch="wheelhouse"
    )
    assert by_role["nvidia"] == ["nvidia-smi"]


def test_the_driver_on_demand_and_never_without_gpu_hosts(nvidia_roles_dir: Path, tmp_path: Path):
    by_role, _ = inputs(
        nvidia_roles_dir, tmp_path, bundle_include_serving="true", bundle_include_nvidia="true"
    )
    assert by_role["nvidia"] == ["nvidia-smi"]
    by_role, _ = inputs(
        nvidia_roles_dir, tmp_path, bundle_include_serving="false", bundle_include_nvidia="true"
    )
    assert by_role["nvidia"] == []
