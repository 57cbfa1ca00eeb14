"""Install checks: the wheel goes into fresh venvs with pip and with uv, then is imported."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from packaging.utils import parse_wheel_filename

from toolkit import tempnames
from toolkit.envs import create_venv, install, layer_on, offline_env, runtime_env, uv_binary, venv_python
from toolkit.errors import VpatchError

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
    wheel: Path, version: str, project, *, runtime: bool = True, exact_module_version: bool = True
) -> list[tuple[str, bool, str]]:
    """(check name, ok, detail) for a pip and a uv install of `wheel` into fresh venvs.

    With `runtime`, the venvs see the cached CPU runtime layer (torch and vLLM's
    imports), so that `import vllm` runs for real; without it the package must
    import on its own (small synthetic wheels in tests).
    """
    dist, _, _, _ = parse_wheel_filename(wheel.name)
    cache_dir = project.options.cache_dir if project is not None else Path(tempfile.gettempdir())
    results = []
    layer = None
    if runtime:
        try:
            layer = runtime_env(cache_dir)
        except VpatchError as error:
            return [("install-runtime", False, error.message)]
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
            if layer is not None:
                layer_on(venv, layer)

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
