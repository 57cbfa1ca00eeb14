"""The import probe of a flavor build: the wheel installed `--no-deps` into a fresh venv over the CPU
runtime layer (torch 2.13.0+cpu and vLLM's import-time dependencies), then its modules imported one by
one by the `import_probe` driver. Reports, not a pass/fail check: a CPU build pinned to another torch
or a newer C++ runtime than this machine's is expected to stop at its compiled extension, and the
probe says where and why.
"""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from toolkit import tempnames
from toolkit.envs import create_venv, install, layer_on, offline_env, runtime_env, venv_python
from toolkit.errors import VpatchError
from toolkit.model import Series
from toolkit.serving.drivers import driver_command


def series_modules(series: Series, package: str = "vllm") -> list[str]:
    """The compiled extension first, then every module the series touches that the wheel ships."""
    modules = [f"{package}._C"]
    for path in sorted({p for patch in series.patches for p in patch.touched_paths}):
        if path.startswith(f"{package}/") and path.endswith(".py"):
            name = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            if name not in modules:
                modules.append(name)
    return modules


def _tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def probe_imports(wheel: Path, series: Series | None, cache_dir: Path, *, modules: list[str] | None = None) -> dict:
    """`modules` (default: `series_modules(series)`) imported one by one in a fresh venv over the runtime layer."""
    names = modules if modules is not None else (series_modules(series) if series is not None else [])
    started = time.perf_counter()
    try:
        layer = runtime_env(cache_dir)
    except VpatchError as error:
        return {"error": f"no runtime layer: {error.message}"}
    scratch = cache_dir / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("probe"), dir=scratch) as tmp:
        venv = create_venv(Path(tmp) / "venv")
        try:
            install(venv, [str(wheel)], installer="pip", no_deps=True)
        except VpatchError as error:
            return {"error": f"pip install --no-deps failed: {error.message}"}
        layer_on(venv, layer)
        proc = subprocess.run(
            driver_command(venv_python(venv), "import_probe", *names),
            capture_output=True,
            text=True,
            env=offline_env(),
            timeout=600,
        )
        venv_bytes = _tree_bytes(Path(tmp) / "venv")
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-IMPORTS ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if proc.returncode < 0:  # a signal: SIGILL is an instruction this CPU lacks, SIGKILL the OOM killer
            tail = f"killed by {signal.Signals(-proc.returncode).name} ({tail})"
        return {"error": f"import vllm failed: {tail}", "returncode": proc.returncode}
    result = json.loads(line.removeprefix("VPATCH-IMPORTS "))
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["venv_bytes"] = venv_bytes
    result["runtime_layer"] = layer.name
    return result
