"""One real step of the chain replayed from the resolutions kept in the tree.

`vpatch rebase OLD --onto NEW --beside` from a fresh project root outside git (so with an empty rr-cache of its
own, removed afterwards) over a copy of the repository's patches/: what the real-vLLM tests of a chain step
check against `patches/vllm-NEW/resolutions/`. Nothing under the repository's patches/ is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.git import Git
from toolkit.lifecycle.rebase import rerere_cache
from toolkit.project import Project
from toolkit.records.resolutions import ResolutionIndex, decode_index


@dataclass(frozen=True)
class Replay:
    index: ResolutionIndex  # the recorded resolutions of the step
    recorded: Path  # patches/vllm-NEW/resolutions/ of the repository
    root: Path  # the fresh project root the rebase ran in
    proc: subprocess.CompletedProcess[str]
    result: dict  # the rebase's --json output

    @property
    def outcomes(self) -> dict[str, dict]:
        return {p["name"]: p for p in self.result["patches"]}

    def checkout(self, new: str) -> Git:
        return Git(self.root / "checkouts" / f"vllm-{new}-rebase")


def replay_step(repo: Path, project: Project, old: str, new: str, root: Path) -> Replay:
    """Rebase `old` onto `new` in `root` (created here) with only the recorded resolutions to go on."""
    recorded = repo / "patches" / f"vllm-{new}" / "resolutions"
    index = decode_index((recorded / "index.json").read_bytes())
    assert (index.old_version, index.new_version) == (old, new)
    shutil.copytree(repo / "patches", root / "patches")
    cache = project.options.cache_dir  # the verified downloads and bases other real tests use
    store = rerere_cache(cache, "vllm", root)
    assert not store.exists()
    vpatch = [str(Path(sys.executable).with_name("vpatch")), "--root", str(root), "--cache-dir", str(cache)]
    try:
        proc = subprocess.run(
            [*vpatch, "rebase", old, "--onto", new, "--beside", "--json"], capture_output=True, text=True, timeout=600
        )
    finally:
        shutil.rmtree(store, ignore_errors=True)  # the rr-cache this root got, and its index
        for leftover in store.parent.glob(f"{store.name}.resolutions.json*"):
            leftover.unlink()
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Replay(index, recorded, root, proc, json.loads(proc.stdout))


def assert_replayed(replay: Replay, new: str) -> None:
    """No stop; each recorded resolution announced and used (the patch's post-image of the conflicted file is
    the recorded file); the resolutions written beside the rebased series are the recorded ones."""
    assert replay.result["done"] and replay.result["stopped"] is None
    outcomes = replay.outcomes
    for entry in replay.index.resolutions:
        said = (
            f"conflict in {entry.path} resolved by the recorded resolution "
            f"patches/vllm-{new}/resolutions/{entry.resolution}"
        )
        # one line per patch; a patch that conflicted in several files lists them joined by "; "
        said_for_patch = [
            line for line in replay.proc.stderr.splitlines() if line.startswith(f"vpatch: {entry.patch}: ")
        ]
        assert any(said in line for line in said_for_patch), (entry.patch, said_for_patch)
        assert outcomes[entry.patch]["status"] == "merged"
        assert any(said in detail for detail in outcomes[entry.patch]["details"]), outcomes[entry.patch]
    checkout = replay.checkout(new)
    for entry in replay.index.resolutions:
        post_image = checkout.run("show", f"{outcomes[entry.patch]['commit']}:{entry.path}").stdout
        assert post_image == (replay.recorded / entry.resolution).read_bytes(), entry.patch
    written = replay.root / "patches" / f"vllm-{new}.rebased" / "resolutions"
    assert files_under(written) == files_under(replay.recorded)
    assert (replay.root / "patches" / f"vllm-{new}" / "resolutions" / "index.json").read_bytes() == (
        replay.recorded / "index.json"
    ).read_bytes()


def files_under(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}
