"""One real step of the chain replayed from the resolutions kept in the tree: `vpatch rebase 0.9.0 --onto
0.9.1` from a fresh state (a project root outside git, so an empty rr-cache of its own) runs to the end
without a stop, says which recorded resolutions it reused, and its patches' post-images of the conflicted
files are the recorded resolutions. Nothing under the repository's patches/ is written."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.git import Git
from toolkit.lifecycle.rebase import rerere_cache
from toolkit.records.resolutions import decode_index

REPO = REPO_ROOT
OLD, NEW = "0.9.0", "0.9.1"
pytestmark = pytest.mark.real


def test_the_0_9_1_step_replays_from_the_recorded_resolutions(repo_project, tmp_path):
    recorded = REPO / "patches" / f"vllm-{NEW}" / "resolutions"
    index = decode_index((recorded / "index.json").read_bytes())
    assert (index.old_version, index.new_version) == (OLD, NEW)
    conflicted = {(r.patch, r.path) for r in index.resolutions}
    assert {patch[:4] for patch, _ in conflicted} == {"0006", "0007"}  # what NOTES.md says conflicted

    root = tmp_path / "project"  # not in git: its rr-cache is its own, under the cache, and empty
    shutil.copytree(REPO / "patches", root / "patches")
    cache = repo_project.options.cache_dir  # the verified downloads and bases other real tests use
    store = rerere_cache(cache, "vllm", root)
    assert not store.exists()
    vpatch = [str(Path(sys.executable).with_name("vpatch")), "--root", str(root), "--cache-dir", str(cache)]
    try:
        proc = subprocess.run(
            [*vpatch, "rebase", OLD, "--onto", NEW, "--beside", "--json"], capture_output=True, text=True, timeout=600
        )
    finally:
        shutil.rmtree(store, ignore_errors=True)  # the rr-cache this root got, and its index
        for leftover in store.parent.glob(f"{store.name}.resolutions.json*"):
            leftover.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["done"] and result["stopped"] is None

    # Announced, on stderr and in each patch's outcome, with the file it came from.
    outcomes = {p["name"]: p for p in result["patches"]}
    for entry in index.resolutions:
        said = (
            f"conflict in {entry.path} resolved by the recorded resolution "
            f"patches/vllm-{NEW}/resolutions/{entry.resolution}"
        )
        assert f"vpatch: {entry.patch}: {said}" in proc.stderr
        assert outcomes[entry.patch]["status"] == "merged"
        assert any(said in detail for detail in outcomes[entry.patch]["details"]), outcomes[entry.patch]

    # The replayed patches' post-images of the conflicted files are the recorded resolutions.
    checkout = Git(root / "checkouts" / f"vllm-{NEW}-rebase")
    for entry in index.resolutions:
        commit = outcomes[entry.patch]["commit"]
        post_image = checkout.run("show", f"{commit}:{entry.path}").stdout
        assert post_image == (recorded / entry.resolution).read_bytes(), entry.patch

    # The rebase writes the resolutions it used beside the series it produced: the same files.
    written = root / "patches" / f"vllm-{NEW}.rebased" / "resolutions"
    assert _files(written) == _files(recorded)
    assert (root / "patches" / f"vllm-{NEW}" / "resolutions" / "index.json").read_bytes() == (
        recorded / "index.json"
    ).read_bytes()


def _files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
