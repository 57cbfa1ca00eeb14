"""A dynamo-base venv as hard links over the stock venv (real venvs, real pip, small synthetic wheels)."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import make_wheel
from tests.harness.trees import package_files
from toolkit.envs import create_venv, install, venv_python
from toolkit.wheel.linked_install import NotLinkable, install_over, link_install, site_packages
from toolkit.wheel.record import record_hash

STOCK = "0.1.0"
PATCHED = "0.1.0+dynamo.abc123"
DIST_INFO = f"vllm-{PATCHED}.dist-info"
ENTRY_POINTS = "[console_scripts]\nvllm = vllm.cli:main\n"
CLI = "def main():\n    print('dynamo-base cli')\n    return 0\n"


def _patched_files() -> dict[str, str | bytes]:
    files: dict[str, str | bytes] = dict(package_files(STOCK))
    files["vllm/_version.py"] = files["vllm/_version.py"].replace(STOCK, PATCHED)  # type: ignore[union-attr]
    files["vllm/core/scheduler.py"] = "CHANGED = True\n"
    files["vllm/distributed/kv_events.py"] = "ADDED = 'by the series'\n"  # a file stock does not have
    files["vllm/cli.py"] = CLI
    del files["vllm/engine/args.py"]  # a file the series removes
    return files


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("wheels")
    stock_files: dict[str, str | bytes] = {**package_files(STOCK), "vllm/cli.py": CLI}
    stock = make_wheel(tmp_path / "stock", STOCK, stock_files)
    patched = make_wheel(
        tmp_path / "patched", PATCHED, _patched_files(), extra={f"{DIST_INFO}/entry_points.txt": ENTRY_POINTS.encode()}
    )
    return stock, patched


@pytest.fixture(scope="module")
def stock_venv(tmp_path_factory, wheels: tuple[Path, Path]) -> Path:
    """Shared by the module's tests: none of them may change it (one test checks that it stays byte-identical)."""
    venv = create_venv(tmp_path_factory.mktemp("stock") / "venv")
    install(venv, [str(wheels[0])], installer="pip", no_deps=True)
    subprocess.run([str(venv_python(venv)), "-m", "compileall", "-q", str(site_packages(venv))], check=True)
    (site_packages(venv) / "_vpatch_runtime.pth").write_text("/nonexistent/layer\n")
    return venv


def _run(venv: Path, code: str, *, bytecode: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    if not bytecode:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    proc = subprocess.run([str(venv_python(venv)), "-c", code], capture_output=True, text=True, env=env, check=True)
    return proc.stdout.strip()


def _pip(venv: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "pip", "--python", str(venv_python(venv)), "--disable-pip-version-check", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout


def _snapshot(root: Path) -> dict[str, tuple[str, int, int]]:
    """Every file under `root`: (sha256, mode, mtime_ns), so that a write, a chmod or a touch shows."""
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            st = path.lstat()
            out[str(path.relative_to(root))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                st.st_mode,
                st.st_mtime_ns,
            )
    return out


def _vllm_tree(venv: Path) -> dict[str, bytes]:
    site = site_packages(venv)
    return {
        str(p.relative_to(site)): p.read_bytes()
        for p in sorted((site / "vllm").rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_the_layer_holds_what_a_full_install_holds_and_links_the_unchanged_files(tmp_path, wheels, stock_venv):
    layered = create_venv(tmp_path / "layered")
    how = install_over(layered, wheels[1], stock_venv)
    full = create_venv(tmp_path / "full")
    install(full, [str(wheels[1])], installer="pip", no_deps=True)

    assert _vllm_tree(layered) == _vllm_tree(full)
    site, stock_site = site_packages(layered), site_packages(stock_venv)
    assert (site / "vllm/_C.abi3.so").stat().st_ino == (stock_site / "vllm/_C.abi3.so").stat().st_ino
    assert (site / "vllm/core/block_pool.py").stat().st_ino == (stock_site / "vllm/core/block_pool.py").stat().st_ino
    assert (site / "vllm/core/scheduler.py").stat().st_ino != (stock_site / "vllm/core/scheduler.py").stat().st_ino
    assert not (site / "vllm/engine/args.py").exists()
    assert not (site / "_vpatch_runtime.pth").exists(), "a file outside the stock RECORDs was carried over"
    assert how["over"] == str(stock_venv) and how["written"] >= 3, how
    # the stock .pyc of an unchanged module came along; the changed module was compiled anew
    pyc = next((site / "vllm/core/__pycache__").glob("block_pool.*.pyc"))
    assert pyc.stat().st_ino == next((stock_site / "vllm/core/__pycache__").glob("block_pool.*.pyc")).stat().st_ino
    changed_pyc = next((site / "vllm/core/__pycache__").glob("scheduler.*.pyc"))
    assert changed_pyc.stat().st_nlink == 1

    probe = "import importlib.metadata as m, vllm, vllm.core.scheduler as s; "
    probe += "print(m.version('vllm'), vllm.__version__, s.CHANGED)"
    assert _run(layered, probe) == f"{PATCHED} {PATCHED} True"
    assert f"vllm {PATCHED}" in " ".join(_pip(layered, "list").split())
    assert subprocess.run([str(layered / "bin" / "vllm")], capture_output=True, text=True).stdout == "dynamo-base cli\n"


def test_every_installed_record_row_matches_the_file_it_names(tmp_path, wheels, stock_venv):
    layered = create_venv(tmp_path / "layered")
    install_over(layered, wheels[1], stock_venv)
    site = site_packages(layered)
    rows = list(csv.reader(io.StringIO((site / DIST_INFO / "RECORD").read_text())))
    listed = {os.path.normpath(site / row[0]) for row in rows}
    for name, digest, size in rows:
        if name.endswith("/RECORD"):
            continue
        data = (site / name).read_bytes()
        assert (record_hash(data), str(len(data))) == (digest, size), name
    on_disk = {os.path.normpath(p) for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert on_disk <= listed, sorted(on_disk - listed)
    assert "../../../bin/vllm" in {row[0] for row in rows}
    assert (site / DIST_INFO / "INSTALLER").read_text() == "vpatch\n"


def test_the_stock_venv_is_byte_identical_after_a_layer_was_made_and_used(tmp_path, wheels, stock_venv):
    before = _snapshot(stock_venv)
    layered = create_venv(tmp_path / "layered")
    install_over(layered, wheels[1], stock_venv)
    site = site_packages(layered)
    # use it the ways that write into site-packages: imports writing .pyc, a forced recompile of the linked
    # modules, a rewritten .pth, a new file in a linked-into directory, pip replacing and removing the install
    _run(layered, "import vllm.core.block_pool, vllm.core.scheduler, vllm.cli", bytecode=True)
    subprocess.run([str(venv_python(layered)), "-m", "compileall", "-f", "-q", str(site)], check=True)
    (site / "_vpatch_runtime.pth").write_text("/another/layer\n")
    (site / "vllm/core/new_module.py").write_text("X = 1\n")
    _pip(layered, "install", "--no-deps", "--force-reinstall", str(wheels[1]))
    _pip(layered, "uninstall", "--yes", "vllm")
    assert not (site / "vllm/_C.abi3.so").exists()
    assert _snapshot(stock_venv) == before
    assert _run(stock_venv, "import importlib.metadata as m, vllm; print(m.version('vllm'), vllm.__version__)") == (
        f"{STOCK} {STOCK}"
    )


def test_a_wheel_that_cannot_be_linked_is_installed_the_ordinary_way(tmp_path, wheels, stock_venv):
    odd = make_wheel(
        tmp_path / "odd", PATCHED, _patched_files(), extra={f"vllm-{PATCHED}.data/scripts/tool": b"#!/bin/sh\n"}
    )
    with pytest.raises(NotLinkable, match=r"\.data directory"):
        link_install(odd, create_venv(tmp_path / "probe"), stock_venv)
    layered = create_venv(tmp_path / "layered")
    how = install_over(layered, odd, stock_venv, installer="pip")
    assert "data directory" in how["full_install"], how
    assert _vllm_tree(layered) == _files_of(odd)
    assert _run(layered, "import importlib.metadata as m; print(m.version('vllm'))") == PATCHED
    assert (layered / "bin" / "tool").is_file()


def test_a_stock_venv_without_an_install_gives_the_ordinary_install(tmp_path, wheels):
    empty = create_venv(tmp_path / "empty")
    layered = create_venv(tmp_path / "layered")
    how = install_over(layered, wheels[1], empty, installer="pip")
    assert "holds no installed RECORD" in how["full_install"]
    assert _run(layered, "import vllm; print(vllm.__version__)") == PATCHED


def _files_of(wheel: Path) -> dict[str, bytes]:
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        return {n: archive.read(n) for n in archive.namelist() if n.startswith("vllm/")}


def test_a_wheel_sharing_no_file_with_the_stock_venv_is_installed_the_ordinary_way(tmp_path, stock_venv):
    plugin_files: dict[str, str | bytes] = {"dynamo_plugin/__init__.py": "NAME = 'plugin'\n"}
    # (make_wheel always adds a vllm/_C.abi3.so: here one with other bytes than stock's)
    other = {"vllm/_C.abi3.so": b"not the stock extension"}
    plugin = make_wheel(tmp_path / "plugin", "1.0.0", plugin_files, project="dynamo_plugin", extra=other)
    layered = create_venv(tmp_path / "layered")
    how = install_over(layered, plugin, stock_venv, installer="pip")
    assert "no file in common" in how["full_install"], how
    assert (site_packages(layered) / "dynamo_plugin-1.0.0.dist-info" / "INSTALLER").read_text() == "pip\n"
