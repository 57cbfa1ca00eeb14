"""dynamo-base wheels from the real vLLM 0.8.4 stock wheel (294 MB) and sdist.

The overlay build, its verification (RECORD recomputed over ~900 MB of members,
pip and uv installs into fresh venvs, `import vllm` on the CPU runtime layer),
reproducibility, `vpatch doctor` on the installed result, and a real
`VLLM_TARGET_DEVICE=empty` source build. The wheel, the runtime layer and the
build environment are cached under ~/.cache/vpatch, so reruns are quick.
"""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from tests.harness import commit_in, run_vpatch
from tests.harness.paths import REPO_ROOT
from toolkit.envs import create_venv, install, venv_python
from toolkit.index import fetch_artifact
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.wheel.overlay import build_overlay
from toolkit.wheel.source import build_source
from toolkit.wheel.verify import verify_wheel

REPO = REPO_ROOT
VERSION = "0.8.4"
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Project:
    """The repository's pins with a one-patch series of our own, in a copy of patches/."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "patches", root / "patches")
    project = Project.load(load_options({"root": str(root), "cache_dir": str(load_options().cache_dir)}))
    pin = project.pins.get(VERSION)
    with project.scratch_checkout(pin) as checkout:
        target = checkout.path / "vllm/v1/core/block_pool.py"
        commit_in(
            checkout.path,
            {
                "vllm/v1/core/block_pool.py": target.read_text()
                + "\n# dynamo-base: block events are published from here.\n",
                "vllm/v1/core/kv_events_marker.py": '"""Marker module."""\nENABLED = False\n',
            },
            subject="[V1] mark the block pool",
            body="A real one-patch series.",
        )
        from toolkit.export import plan_export, write_export

        write_export(plan_export(checkout, project.series_dir(pin)))
    return project


@pytest.fixture(scope="module")
def built(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return build_overlay(project, project.pins.get(VERSION), out)


def test_overlay_wheel_is_verified_and_installs(project, built):
    pin = project.pins.get(VERSION)
    assert (
        built.path.name == f"vllm-{VERSION}+dynamo.{project.series(pin).fingerprint()}-cp38-abi3-manylinux1_x86_64.whl"
    )
    report = verify_wheel(built.path, project, install=True)
    failed = [c for c in report.checks if not c.ok]
    assert not failed, failed
    names = {c.name for c in report.checks}
    assert {"record", "stock-members", "changed-set", "check-wheel-contents", "install-pip", "install-uv"} <= names
    install_pip = next(c for c in report.checks if c.name == "install-pip")
    assert f"import vllm → {built.version}" in install_pip.detail
    stock = fetch_artifact(project.options.cache_dir, pin.wheels[0])
    with zipfile.ZipFile(built.path) as ours, zipfile.ZipFile(stock) as theirs:
        for name in ("vllm/_C.abi3.so", "vllm/vllm_flash_attn/_vllm_fa3_C.abi3.so"):
            assert ours.getinfo(name).CRC == theirs.getinfo(name).CRC
        provenance = json.loads(ours.read(f"vllm-{built.version}.dist-info/dynamo_base.json"))
    assert provenance["files"] == {
        "added": ["vllm/v1/core/kv_events_marker.py"],
        "generated": ["vllm/_version.py"],
        "modified": ["vllm/v1/core/block_pool.py"],
        "not_shipped": [],
        "removed": [],
    }
    assert provenance["upstream"]["base_commit"] == pin.base_commit
    assert len(provenance["compiled"]) == 6


def test_overlay_build_is_reproducible(project, built, tmp_path):
    again = build_overlay(project, project.pins.get(VERSION), tmp_path)
    assert again.path.read_bytes() == built.path.read_bytes()


def test_doctor_on_the_installed_wheel(project, built, tmp_path):
    venv = create_venv(tmp_path / "venv")
    install(venv, [str(built.path)], installer="uv", no_deps=True)
    proc = run_vpatch(project.options.root, "doctor", "--python", str(venv_python(venv)), "--json")
    result = json.loads(proc.stdout)
    assert result["state"] == "dynamo-base" and result["features"] == ["kv-routing"]


def test_source_build_with_empty_target_device(project, tmp_path):
    built = build_source(project, project.pins.get(VERSION), tmp_path, target_device="empty")
    assert built.path.name.endswith("-py3-none-any.whl") and ".empty" in built.path.name
    with zipfile.ZipFile(built.path) as wheel:
        names = set(wheel.namelist())
        assert not any(n.endswith(".so") for n in names)
        assert "vllm/v1/core/kv_events_marker.py" in names
        assert b"block events are published from here" in wheel.read("vllm/v1/core/block_pool.py")
        provenance = json.loads(wheel.read(next(n for n in names if n.endswith("dynamo_base.json"))))
    assert provenance["build"]["mode"] == "source (empty)"
    report = verify_wheel(built.path, project, install=False)
    assert report.ok, report.checks
