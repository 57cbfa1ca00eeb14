"""Install checks: the wheel goes into fresh venvs with pip and with uv, then is imported.

Passing results are kept in the cache keyed by the wheel's sha256 and everything else the checks depend
on (file name, expected version, the runtime layer, Python, the toolkit's version, the installers'
versions): a rebuild that gives the same bytes, or `verify` / `ci` on a wheel already checked,
reuses them instead of installing 300 MB twice more. (`conform` keeps its own venvs, keyed by the
same sha256, in toolkit/conformance/envs.py.) Failures are never kept: they run again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from packaging.utils import parse_wheel_filename

from toolkit import __version__ as toolkit_version
from toolkit import tempnames
from toolkit.cache import sha256_file
from toolkit.envs import create_venv, install, layer_on, offline_env, runtime_env, uv_binary, venv_python
from toolkit.errors import VpatchError
from toolkit.wheel.blame import missing_module
from toolkit.wheel.kept import REUSED, as_reused, keep, kept_path, read_kept
from toolkit.wheel.wheel_reqs import requirements_layer

__all__ = ["REUSED", "install_checks"]

PROBE = """
import importlib.metadata as metadata, json, sys
name = sys.argv[1]
result = {"dist_version": metadata.version(name)}
import vllm
result["vllm_version"] = vllm.__version__
result["vllm_file"] = vllm.__file__
print("VPATCH-PROBE " + json.dumps(result))
"""


def install_checks(
    wheel: Path,
    version: str,
    project,
    *,
    runtime: bool = True,
    exact_module_version: bool = True,
    sha256: str | None = None,
    blame: Callable[[str], str | None] | None = None,
) -> list[tuple[str, bool, str]]:
    """(check name, ok, detail) for a pip and a uv install of `wheel` into fresh venvs.

    With `runtime`, the venvs see the cached CPU runtime layer (torch and vLLM's
    imports), so that `import vllm` runs for real; without it the package must
    import on its own (small synthetic wheels in tests). Either way the wheel's own requirements that
    apply here are layered in too (toolkit/wheel/wheel_reqs.py). An import that fails for a missing module
    names it, and `blame` says which change brought that import in.
    """
    dist, _, _, _ = parse_wheel_filename(wheel.name)
    cache_dir = project.options.cache_dir if project is not None else Path(tempfile.gettempdir())
    layer = None
    if runtime:
        try:
            layer = runtime_env(cache_dir)
        except VpatchError as error:
            return [("install-runtime", False, error.message)]
    try:
        # a requirement stock declares too still goes in when the wheel's changes import it
        imported = (lambda module: blame(module) is not None) if blame is not None else None
        reqs = requirements_layer(wheel, cache_dir, layer, _stock_wheel(project, version), imported)
    except VpatchError as error:
        return [("install-requirements", False, error.message)]
    facts = [
        sha256 or sha256_file(wheel),
        wheel.name,
        version,
        str(layer) if layer is not None else None,
        str(reqs.venv) if reqs.venv is not None else None,
        exact_module_version,
        sys.version,
        toolkit_version,
        _installer_versions(),
    ]
    kept = kept_path(cache_dir, "install", facts)
    reused = read_kept(kept)
    if reused is not None:
        return as_reused(reused)
    layers = [p for p in (layer, reqs.venv) if p is not None]
    results = _run_installs(wheel, dist, version, cache_dir, layers, blame or (lambda _module: None))
    note = reqs.summary()
    results = [(name, ok, f"{detail}; {note}" if note else detail) for name, ok, detail in results]
    keep(kept, results, wheel=wheel.name)
    return results


def _stock_wheel(project, version: str) -> Path | None:
    """The stock wheel of the pin `version` is a release of (fetched into the cache), or None."""
    from packaging.version import InvalidVersion, Version

    from toolkit.index import fetch_artifact
    from toolkit.wheel.foreign import pin_of

    if project is None:
        return None
    try:
        pin = pin_of(project, Version(version))
    except InvalidVersion:
        return None
    if pin is None or not pin.wheels:
        return None
    try:
        return fetch_artifact(project.options.cache_dir, pin.wheels[0], quiet=True)
    except VpatchError:
        return None


def _installer_versions() -> list[str]:
    versions = [_tool_version([sys.executable, "-m", "pip", "--version"])]
    uv = uv_binary()
    if uv is not None:
        versions.append(_tool_version([uv, "--version"]))
    return versions


def _tool_version(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return proc.stdout.split(" from ")[0].strip() if proc.returncode == 0 else f"unavailable: {argv[0]}"


def _run_installs(
    wheel: Path, dist: str, version: str, cache_dir: Path, layers: list[Path], blame: Callable[[str], str | None]
) -> list[tuple[str, bool, str]]:
    results = []
    for installer in ("pip", "uv"):
        name = f"install-{installer}"
        if installer == "uv" and uv_binary() is None:
            results.append((name, False, "uv is not installed"))
            continue
        scratch = cache_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix("verify"), dir=scratch) as tmp:
            venv = create_venv(Path(tmp) / "venv")
            try:
                install(venv, [str(wheel)], installer=installer, no_deps=True)
            except VpatchError as error:
                results.append((name, False, error.message))
                continue
            if layers:
                layer_on(venv, *layers)

            proc = subprocess.run(
                [str(venv_python(venv)), "-c", PROBE, str(dist)],
                capture_output=True,
                text=True,
                env=offline_env(),
                timeout=600,
            )
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-PROBE ")), None)
            if proc.returncode != 0 or line is None:
                tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                module = missing_module(proc.stderr)
                if module is not None:
                    who = blame(module) or f"no patch of the series adds an import of {module}"
                    tail = f"{tail} (module {module}: {who})"
                results.append((name, False, f"import vllm failed: {tail}"))
                continue
            probe = json.loads(line.removeprefix("VPATCH-PROBE "))
            ok = (
                probe["dist_version"] == version
                and probe["vllm_version"] == version
                and probe["vllm_file"].startswith(str(venv))
            )
            results.append((name, ok, f"import vllm → {probe['vllm_version']} (installed {probe['dist_version']})"))
    return results
