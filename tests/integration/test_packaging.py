"""The project installs with uv as well as with pip (the test venv itself was made with `pip install -e`)."""

from __future__ import annotations

import subprocess

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.envs import create_venv, uv_binary, venv_python

REPO = REPO_ROOT
pytestmark = pytest.mark.real


def test_uv_pip_install_gives_a_working_vpatch(tmp_path):
    uv = uv_binary()
    assert uv is not None, "uv is a dependency of vpatch and should be installed beside it"
    venv = create_venv(tmp_path / "venv")
    proc = subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(venv_python(venv)), str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    version = subprocess.run([str(venv / "bin" / "vpatch"), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("vpatch ")
    status = subprocess.run(
        [str(venv / "bin" / "vpatch"), "--root", str(REPO), "status", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert status.returncode == 0, status.stderr
    assert '"0.8.4"' in status.stdout
