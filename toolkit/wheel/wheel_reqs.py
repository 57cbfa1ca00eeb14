"""The wheel's own import-time requirements, for the install check: what its METADATA asks for on this
platform, beyond the CPU runtime layer, installed where it installs on CPU.

A fork may import what stock vLLM does not (`triton` unconditionally, say) and declare it in its
Requires-Dist. The install check's import would then fail for a reason that is the check's, not the
wheel's. So each requirement that applies here (markers evaluated), that the runtime layer does not
already hold and (when the stock wheel of the pin is known) that stock vLLM does not declare too (the
runtime layer is the set tested to import stock vLLM on CPU) is installed, `--no-deps`, into a layer of
its own, keyed by the list and cached. A requirement stock declares too is installed all the same when
the wheel's own changes import it: stock may import it only on GPU paths, so the runtime layer need not
hold it, while a fork importing it at module level needs it for `import vllm` on CPU. Left out: the
torch family and CUDA packages (the runtime's CPU torch stands in for them; a CUDA build of one would
break the import), and any requirement that does not install here: each is named in the check's detail.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from toolkit.cache import atomic_write_text, locked
from toolkit.envs import _site_packages, create_venv, install
from toolkit.errors import VpatchError
from toolkit.wheel.requires import applicable_requirements, wheel_metadata

# Built against one torch ABI (CUDA builds on PyPI): the runtime's CPU torch stands in for them.
TORCH_BOUND = frozenset(
    {
        "torch",
        "torchvision",
        "torchaudio",
        "xformers",
        "flashinfer-python",
        "vllm-flash-attn",
        "intel-extension-for-pytorch",
    }
)
STAMP = "vpatch-wheel-reqs.json"


@dataclass
class RequirementsLayer:
    venv: Path | None  # None: nothing to install
    installed: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)  # already in the runtime layer
    stock: list[str] = field(default_factory=list)  # declared by the stock wheel too
    stock_name: str = ""
    left_out: list[str] = field(default_factory=list)  # "req: why"

    def summary(self) -> str:
        parts = []
        if self.installed:
            parts.append(f"the wheel's requirements {', '.join(self.installed)} installed")
        if self.left_out:
            parts.append(f"left out: {'; '.join(self.left_out)}")
        if self.stock:
            parts.append(f"{len(self.stock)} more that {self.stock_name} declares too left to the runtime layer")
        return "; ".join(parts)


def installed_names(layer: Path | None) -> set[str]:
    if layer is None:
        return set()
    return {
        canonicalize_name(d.metadata["Name"] or "") for d in metadata.distributions(path=[str(_site_packages(layer))])
    }


def requirements_layer(
    wheel: Path,
    cache_dir: Path,
    runtime: Path | None,
    stock: Path | None = None,
    imported: Callable[[str], bool] | None = None,
) -> RequirementsLayer:
    """The wheel's applicable requirements that `runtime` lacks, in a cached layer (see the module's doc).

    With `stock` (the stock wheel of the pin), only what the wheel asks for beyond stock vLLM: the runtime
    layer is the tested set that imports stock vLLM on CPU, so what a fork adds is what it may lack, and
    what its changes import (`imported(module)`: the distribution's name as a module, `triton`)."""
    dist = canonicalize_name(wheel.name.split("-", 1)[0])
    held = installed_names(runtime)
    result = RequirementsLayer(None)
    stock_names: set[str] = set()
    if stock is not None:
        stock_names = {canonicalize_name(r.name) for r in applicable_requirements(wheel_metadata(stock), stock)}
        result.stock_name = stock.name
    wanted: list[Requirement] = []
    for req in applicable_requirements(wheel_metadata(wheel), wheel):
        name = canonicalize_name(req.name)
        if name == dist:
            continue
        if name in held:
            result.held.append(str(req))
        elif name in stock_names and not (imported is not None and imported(name.replace("-", "_"))):
            result.stock.append(str(req))
        elif name in TORCH_BOUND or name.startswith(("nvidia-", "cuda-")):
            result.left_out.append(f"{req}: built for CUDA torch (the runtime's CPU torch stands in)")
        else:
            wanted.append(req)
    if not wanted:
        return result
    names = sorted({str(r) for r in wanted})
    key = hashlib.sha256(json.dumps(names).encode()).hexdigest()[:16]
    venv = cache_dir / "envs" / f"wheel-reqs-{key}"
    with locked(venv):
        stamp = venv / STAMP
        if not stamp.is_file():
            if venv.exists():
                shutil.rmtree(venv)  # an earlier run was interrupted
            create_venv(venv)
            done: dict[str, list[str]] = {"installed": [], "left_out": []}
            for spec in names:
                try:
                    install(venv, [spec], installer="pip", no_deps=True)
                    done["installed"].append(spec)
                except VpatchError as error:
                    done["left_out"].append(f"{spec}: does not install here ({error.message})")
            atomic_write_text(stamp, json.dumps(done) + "\n")
        kept = json.loads(stamp.read_text(encoding="utf-8"))
    result.venv = venv if kept["installed"] else None
    result.installed = kept["installed"]
    result.left_out += kept["left_out"]
    return result
