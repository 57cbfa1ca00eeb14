"""The foundation against the real vLLM 0.8.4 sdist from PyPI (pinned in patches/pins.toml).

Downloads go to the normal cache (~/.cache/vpatch) so reruns are fast; a cold cache
only costs the 6.7 MB sdist. Nothing under the repository's patches/ is written:
round trips export into a copy in tmp.
"""

from __future__ import annotations

import pytest

from tests.harness import assert_series_round_trips, commit_in, run_vpatch
from tests.harness.paths import REPO_ROOT
from toolkit.apply import apply_series
from toolkit.checkout import UPSTREAM_REF, create_checkout
from toolkit.export import plan_export, write_export
from toolkit.git import Git
from toolkit.model import load_series
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.sources.sdist import build_base_repo

REPO = REPO_ROOT
VERSION = "0.8.4"
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def project() -> Project:
    return Project.load(load_options({"root": str(REPO)}))


@pytest.fixture(scope="module")
def pin(project: Project):
    return project.pins.get(VERSION)


def test_sdist_base_commit_is_the_pinned_one_on_this_machine(project, pin, tmp_path):
    base = project.base(pin)
    assert base.commit == pin.base_commit
    # Built again from scratch in another place: the same commit id, byte for byte.
    tarball = project.options.cache_dir / "downloads" / pin.sdist.sha256 / pin.sdist.file
    again = build_base_repo(
        tarball, tmp_path / "again.git", message=Git(base.repo).out("log", "-1", "--format=%B") + "\n"
    )
    assert again == pin.base_commit
    tree = Git(base.repo).out("ls-tree", "-r", "--name-only", base.commit).splitlines()
    assert "vllm/v1/core/block_pool.py" in tree and "tests/v1/core/test_prefix_caching.py" in tree
    assert "vllm/_version.py" in tree  # generated and git-ignored upstream, but shipped: must be kept
    assert not any(name.startswith("vllm-0.8.4/") for name in tree)


def test_committed_series_applies_and_re_exports_byte_identically(project, pin, tmp_path):
    assert_series_round_trips(project, pin, tmp_path)


def test_one_patch_round_trip_on_the_real_tree(project, pin, tmp_path):
    base = project.base(pin)
    checkout = create_checkout(base, tmp_path / "work")
    block_pool = checkout.path / "vllm/v1/core/block_pool.py"
    original = block_pool.read_text()
    anchor = "class BlockPool:"
    assert anchor in original
    commit_in(
        checkout.path,
        {"vllm/v1/core/block_pool.py": original.replace(anchor, "# Publishes KV events when enabled.\n" + anchor)},
        subject="[V1][KV events] mark the block pool as the event source",
        body="The block pool is where cached blocks enter and leave the prefix cache.",
    )
    series_dir = tmp_path / "patches" / "vllm-0.8.4"
    series_dir.mkdir(parents=True)
    (series_dir / "series").write_text("# round trip\n")
    write_export(plan_export(checkout, series_dir))
    exported = {p.name: p.read_bytes() for p in series_dir.iterdir()}
    assert sorted(exported) == ["0001-v1-kv-events-mark-the-block-pool-as-the-event-source.patch", "series"]

    again = create_checkout(base, tmp_path / "again")
    series = load_series(series_dir, pin.version)
    result = apply_series(again, series)
    assert [o.status for o in result.outcomes] == ["clean"]
    assert again.git.out("diff", "--name-only", UPSTREAM_REF, "HEAD") == "vllm/v1/core/block_pool.py"
    assert again.git.out("rev-parse", "HEAD^{tree}") == checkout.git.out("rev-parse", "HEAD^{tree}")
    write_export(plan_export(again, series_dir))
    assert {p.name: p.read_bytes() for p in series_dir.iterdir()} == exported


def test_vpatch_check_passes_on_the_repository(tmp_path):
    """The console script itself, as CI runs it, on the committed pins and series."""
    proc = run_vpatch(REPO, "check", VERSION, "--no-wheels", cwd=tmp_path)
    assert proc.stdout == ""  # no problem lines
    assert f"vllm {VERSION}:" in proc.stderr
