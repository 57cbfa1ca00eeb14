"""The dynamo-base 0.8.4 venv as hard links over the cached stock 0.8.4 venv (the real 294 MB wheels).

The layer must hold the overlay wheel's files exactly (every installed RECORD row checked against the file),
import as dynamo-base on the CPU runtime layer, and leave the shared stock venv's vLLM files as they were.
"""

from __future__ import annotations

import csv
import hashlib
import io
import subprocess
import tempfile
from pathlib import Path

import pytest

from toolkit import tempnames
from toolkit.conformance.envs import on_path, runtime_layers
from toolkit.envs import create_venv, layer_on, offline_env, venv_python
from toolkit.wheel.linked_install import install_over, site_packages
from toolkit.wheel.record import record_hash

pytestmark = pytest.mark.real


def _vllm_files(venv: Path) -> dict[str, tuple[str, int, int]]:
    """The stock venv's vLLM files (sources, .so, .pyc): sha256, mode and mtime, so a write or a touch shows."""
    site = site_packages(venv)
    out = {}
    for path in sorted((site / "vllm").rglob("*")):
        if path.is_file():
            st = path.lstat()
            out[str(path.relative_to(site))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mode,
                st.st_mtime_ns,
            )
    return out


def test_the_dynamo_base_layer_over_stock_084(repo_project, stock_env_084, patched_wheel_084):
    cache = repo_project.options.cache_dir
    before = _vllm_files(stock_env_084)
    scratch = cache / "tmp"  # beside the stock venv: one file system
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("test-layer"), dir=scratch) as tmp:
        venv = create_venv(Path(tmp) / "venv")
        how = install_over(venv, patched_wheel_084, stock_env_084)
        layer_on(venv, *on_path(runtime_layers(cache, patched_wheel_084, False)))
        assert how.get("linked", 0) > 1000 and 0 < how["written"] < 100, how

        site = site_packages(venv)
        dist_info = next(site.glob("vllm-*.dist-info"))
        for name, digest, size in csv.reader(io.StringIO((dist_info / "RECORD").read_text(encoding="utf-8"))):
            if digest:
                data = (site / name).read_bytes()
                assert (record_hash(data), str(len(data))) == (digest, size), name

        probe = "import importlib.metadata as m, vllm; "
        probe += "print('VPATCH-PROBE', m.version('vllm'), vllm.__version__, vllm.__file__)"
        proc = subprocess.run(
            [str(venv_python(venv)), "-c", probe], capture_output=True, text=True, env=offline_env(), timeout=900
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-PROBE "))
        version, module_version, module = line.split()[1:]
        assert "+dynamo." in version and module_version == version, proc.stdout
        assert module.startswith(str(site)), module
    assert _vllm_files(stock_env_084) == before
