"""uv's own cache keeps a pinned download's unpacked wheel, never a build's (a real uv, a real venv, a tmp uv cache)."""

from __future__ import annotations

import shutil

import pytest

from tests.harness import make_wheel
from toolkit.envs import create_venv, install, uv_binary, venv_python


def _archived(uv_cache) -> set[str]:
    """The dist-info names uv keeps unpacked in its cache."""
    return {p.name for p in uv_cache.glob("archive-v*/*/*.dist-info")}


@pytest.mark.skipif(uv_binary() is None, reason="uv is one of the toolkit's installers; this venv has none")
def test_a_built_wheel_leaves_no_copy_in_uvs_cache_a_pinned_download_does(tmp_path, monkeypatch):
    uv_cache = tmp_path / "uv-cache"
    monkeypatch.setenv("UV_CACHE_DIR", str(uv_cache))
    built = make_wheel(tmp_path / "dist", "0.1.0", {"vllm/__init__.py": "X = 1\n"})
    download = tmp_path / "cache" / "downloads" / ("c" * 64)
    download.mkdir(parents=True)
    pinned = shutil.copy(make_wheel(tmp_path / "other", "0.2.0", {"vllm/__init__.py": "X = 2\n"}), download)
    for wheel, name in ((built, "built"), (pinned, "pinned")):
        venv = create_venv(tmp_path / name)
        install(venv, [str(wheel)], installer="uv", no_deps=True)
        assert list(venv.glob("lib/python*/site-packages/vllm/__init__.py")), f"{name}: not installed"
        assert venv_python(venv).exists()
    assert _archived(uv_cache) == {"vllm-0.2.0.dist-info"}
