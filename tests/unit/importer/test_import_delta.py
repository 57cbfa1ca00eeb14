"""`vpatch import` of a post-release's diff taken against stock, over the series imported from the release it
followed: imported as its delta against the series, or refused in one line when it is not the series plus a
delta. The forks are trees written in tmp dirs from the synthetic vllm 1.0 tree, diffed with the real `diff`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.harness import DIFF_AUTHORSHIP, default_tree, make_wheel, module_text, package_files
from toolkit.git import Git

SCHEDULER = module_text("scheduler")
BLOCK_POOL = module_text("block_pool")
# The release's fork (1.0-fork): two files changed, one added.
RELEASE = {
    "vllm/core/scheduler.py": SCHEDULER.replace("VALUE_5 = 5 ", "VALUE_5 = 55 ").replace(
        "VALUE_30 = 30  # scheduler line 30\n", "VALUE_30 = 30  # scheduler line 30\nKV_EVENTS = True\n"
    ),
    "vllm/core/block_pool.py": BLOCK_POOL.replace("VALUE_20 = 20 ", "VALUE_20 = 2000 "),
    "vllm/core/kv_events.py": '"""KV cache events."""\n\nEVENTS: list = []\n',
}
# Its post-release (1.0.post1-fork): all of the above, a fix right beside a line the series added, a change
# elsewhere in a file the series changes, and a file the series does not touch.
POST = {
    **RELEASE,
    "vllm/core/scheduler.py": RELEASE["vllm/core/scheduler.py"].replace(
        "KV_EVENTS = True\n", "KV_EVENTS = True\nKV_EVENTS_QUEUE = 64\n"
    ),
    "vllm/core/block_pool.py": RELEASE["vllm/core/block_pool.py"].replace("VALUE_38 = 38 ", "VALUE_38 = -38 "),
    "vllm/engine/args.py": module_text("args").replace("VALUE_3 = 3 ", "VALUE_3 = 33 "),
}


def fork_diff(tmp_path: Path, name: str, changes: dict[str, str]) -> Path:
    """`diff -ruN stock fork` with the real tool, the fork being stock vllm 1.0 with `changes`."""
    for side, tree in (("stock", default_tree("1.0")), (name, {**default_tree("1.0"), **changes})):
        for path, content in tree.items():
            target = tmp_path / side / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
    proc = subprocess.run(["diff", "-ruN", "stock", name], cwd=tmp_path, capture_output=True, check=False)
    assert proc.returncode == 1, proc.stderr
    path = tmp_path / f"{name}.diff"
    path.write_bytes(proc.stdout)
    return path


def do_import(ws, capsys, diff: Path, *extra: str) -> tuple[int, dict | None, list[str]]:
    capsys.readouterr()
    code = ws.run("import", str(diff), "--version", "1.0", "--feature", "kv-routing", *DIFF_AUTHORSHIP, *extra)
    out, err = capsys.readouterr()
    return code, json.loads(out) if "--json" in extra and out.strip() else None, err.strip().splitlines()


def imported_release(ws, tmp_path, capsys) -> list[str]:
    code, result, _ = do_import(ws, capsys, fork_diff(tmp_path, "release", RELEASE), "--split", "per-file", "--json")
    assert code == 0 and result is not None
    return [p["name"] for p in result["patches"]]


def test_a_post_release_diff_against_stock_is_imported_as_its_delta(pinned, tmp_path, capsys):
    ws = pinned
    first = imported_release(ws, tmp_path, capsys)
    assert len(first) == 3
    post = fork_diff(tmp_path, "post1", POST)
    # Taken against stock, it repeats the series: as it is, it applies to stock, not to stock + series.
    assert Git(tmp_path / "stock").run("apply", "--check", str(post), check=False).returncode == 0
    code, result, err = do_import(ws, capsys, post, "--split", "per-file", "--json")
    assert code == 0 and result is not None, err
    patches = result["patches"]
    assert [p["files"] for p in patches] == [
        ["vllm/core/block_pool.py"],
        ["vllm/core/scheduler.py"],
        ["vllm/engine/args.py"],
    ]
    # Only what the post-release adds: one line each in the series' files, one in the file it does not touch.
    assert [(p["added"], p["removed"]) for p in patches] == [(1, 1), (1, 0), (1, 1)]
    assert [p["name"][:4] for p in patches] == ["0004", "0005", "0006"]
    (note,) = [n for n in result["notes"] if "delta" in n]
    assert note == (
        "post1.diff: taken against stock vllm 1.0 and overlapping the series in 3 file(s) (vllm/core/block_pool.py, "
        "vllm/core/kv_events.py, vllm/core/scheduler.py): imported as its delta against the series (what it "
        "changes relative to stock + the 3 patch(es))"
    )
    scheduler = (ws.series_dir("1.0") / patches[1]["name"]).read_text()
    assert "+KV_EVENTS_QUEUE = 64\n" in scheduler and "VALUE_5" not in scheduler.split("\n---\n", 1)[1]
    assert ws.run("check", "1.0", "--no-wheels") == 0
    # stock + the whole series is the post-release fork, file for file
    assert ws.run("apply", "1.0") == 0
    for path, content in POST.items():
        assert (ws.checkout("1.0") / path).read_text() == content, path
    # the same diff again: already imported (its Origin and its changes are there)
    code, result, _ = do_import(ws, capsys, post, "--json")
    assert code == 0 and result is not None and result["already_imported"]


def refused(ws, capsys, diff: Path) -> str:
    before = ws.snapshot()
    code, _, err = do_import(ws, capsys, diff, "--json")
    assert code == 1
    assert len(err) == 1, err
    assert ws.snapshot() == before
    return err[0]


def test_a_diff_against_stock_that_is_not_the_series_plus_a_delta_is_refused_in_one_line(pinned, tmp_path, capsys):
    ws = pinned
    first = imported_release(ws, tmp_path, capsys)
    scheduler_patch = next(n for n in first if "scheduler" in n)
    block_pool_patch = next(n for n in first if "block-pool" in n)
    # 1. the post-release has stock's line where the series changed one (a revert of part of the series)
    reverting = {**POST, "vllm/core/block_pool.py": POST["vllm/core/block_pool.py"].replace("= 2000 ", "= 20 ")}
    diff = fork_diff(tmp_path, "revert", reverting)
    section = next(
        n for n, text in enumerate(diff.read_text().splitlines(), 1) if text.startswith("--- stock/vllm/core/b")
    )
    line = refused(ws, capsys, diff)
    assert line.startswith(
        f"vpatch: error: revert.diff:{section}: vllm/core/block_pool.py: reverts part of the series: "
    )
    assert f"line 22 of the series' version ({block_pool_patch}) is stock's again" in line
    assert "`vpatch apply 1.0` and diff that checkout against the fork" in line and len(line) < 600
    # 2. a line the series added is gone, nothing in its place
    dropping = {**POST, "vllm/core/scheduler.py": SCHEDULER.replace("VALUE_5 = 5 ", "VALUE_5 = 55 ")}
    line = refused(ws, capsys, fork_diff(tmp_path, "drop", dropping))
    assert f"reverts part of the series: line 33 of the series' version ({scheduler_patch}) is not in it" in line
    # 3. it brought back a line the series removed (the stock value the series replaced, beside the new one)
    restoring = {
        **POST,
        "vllm/core/block_pool.py": POST["vllm/core/block_pool.py"].replace(
            "VALUE_20 = 2000 ", "VALUE_20 = 20  # block_pool line 20\nVALUE_20 = 2000 "
        ),
    }
    line = refused(ws, capsys, fork_diff(tmp_path, "restore", restoring))
    assert (
        "vllm/core/block_pool.py: reverts part of the series: it brings back 'VALUE_20 = 20  # block_pool line 20', "
        f"which the series removes at line 22 of its version ({block_pool_patch})"
    ) in line
    # 4. the release's own diff again, renamed (so its Origin does not say it is imported): nothing new in it
    line = refused(ws, capsys, fork_diff(tmp_path, "again", RELEASE))
    assert line.endswith(
        "again.diff is taken against stock vllm 1.0 and holds nothing the series does not carry already; "
        "nothing to import"
    )
    # 5. lines the series wrote, changed further (the post-release fixes the fork's own code): a delta
    rewriting = {
        **POST,
        "vllm/core/scheduler.py": POST["vllm/core/scheduler.py"].replace("KV_EVENTS = True", "KV_EVENTS = 1"),
    }
    code, result, err = do_import(ws, capsys, fork_diff(tmp_path, "rewrite", rewriting), "--json")
    assert code == 0 and result is not None, err
    (patch,) = result["patches"]
    text = (ws.series_dir("1.0") / patch["name"]).read_text()
    assert "\n-KV_EVENTS = True\n+KV_EVENTS = 1\n+KV_EVENTS_QUEUE = 64\n" in text
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_a_post_release_wheel_against_the_stock_wheel_is_imported_as_its_delta(pinned, tmp_path, capsys):
    """The same with the fork's wheels: --fork the post-release's wheel, --base the pinned stock wheel."""
    ws = pinned

    def fork_wheel(name: str, changes: dict[str, str]) -> str:
        files = {**package_files("1.0"), **changes, "vllm/_version.py": "__version__ = version = '1.0+fork'\n"}
        return str(make_wheel(tmp_path / name, "1.0", files))

    args = ["--version", "1.0", "--feature", "kv-routing", *DIFF_AUTHORSHIP, "--json"]
    capsys.readouterr()
    assert ws.run("import", "--fork", fork_wheel("release", RELEASE), *args) == 0
    capsys.readouterr()
    assert ws.run("import", "--fork", fork_wheel("post1", POST), *args) == 0
    (patch,) = json.loads(capsys.readouterr().out)["patches"]
    assert patch["files"] == ["vllm/core/block_pool.py", "vllm/core/scheduler.py", "vllm/engine/args.py"]
    assert (patch["added"], patch["removed"]) == (3, 2)
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0") == 0
    for path, content in POST.items():
        assert (ws.checkout("1.0") / path).read_text() == content, path
