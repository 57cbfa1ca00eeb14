"""`vpatch import`: patch files, mboxes, git ranges and wheel pairs adopted as series patches.

Every fork is built in a tmp dir from the synthetic vllm 1.0 tree (`helpers.default_tree`); diffs are
made with the real `diff` tool, real git or difflib. A successful import must pass `vpatch check`
(lint, zero-fuzz apply, byte-identical re-export); a refused one must leave patches/ untouched.
"""

from __future__ import annotations

import difflib
import json
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from tests.harness import (
    AUTHOR_ENV,
    DIFF_AUTHORSHIP,
    commit_in,
    default_tree,
    make_sdist,
    make_wheel,
    module_text,
    package_files,
)
from toolkit.git import Git
from toolkit.model import parse_patch

SCHEDULER = module_text("scheduler")
FORK_SCHEDULER = SCHEDULER.replace("VALUE_5 = 5", "VALUE_5 = 55").replace("VALUE_35 = 35", "VALUE_35 = -35")
FORK_BLOCK_POOL = module_text("block_pool").replace("VALUE_20 = 20", "VALUE_20 = 2000")
KV_EVENTS = '"""KV cache events."""\n\nEVENTS: list = []\n'
FORK_CHANGES: dict[str, str | None] = {
    "vllm/core/scheduler.py": FORK_SCHEDULER,
    "vllm/core/block_pool.py": FORK_BLOCK_POOL,
    "vllm/core/kv_events.py": KV_EVENTS,
    "vllm/engine/args.py": module_text("args").replace("VALUE_12 = 12", "VALUE_12 = 1212"),
    "README.md": "# vllm, forked\n",
    "tests/test_core.py": None,
}


# ---------------------------------------------------------------- helpers


def write_tree(root: Path, tree: dict[str, str | bytes | None]) -> Path:
    for name, content in tree.items():
        path = root / name
        if content is None:
            path.unlink(missing_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def base_and_fork(tmp_path: Path, changes: dict, version: str = "1.0") -> tuple[Path, Path]:
    base = write_tree(tmp_path / "base", default_tree(version))
    fork = write_tree(tmp_path / "fork", default_tree(version))
    write_tree(fork, changes)
    return base, fork


def diff_ruN(tmp_path: Path, name: str = "fork.diff") -> Path:
    """`diff -ruN base fork` with the real tool, run from their parent directory."""
    proc = subprocess.run(["diff", "-ruN", "base", "fork"], cwd=tmp_path, capture_output=True, check=False)
    assert proc.returncode == 1, proc.stderr
    path = tmp_path / name
    path.write_bytes(proc.stdout)
    return path


def fork_repo(tmp_path: Path, version: str = "1.0") -> Git:
    repo = Git.init(tmp_path / "forkrepo")
    write_tree(repo.path, default_tree(version))
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", "upstream", env=AUTHOR_ENV)
    return repo


def run(ws, capsys, *args: str) -> tuple[int, dict | None, list[str]]:
    """The CLI in-process: exit code, parsed JSON stdout (with --json), stderr lines."""
    capsys.readouterr()
    code = ws.run(*args)
    out, err = capsys.readouterr()
    data = json.loads(out) if "--json" in args and out.strip() else None
    return code, data, err.strip().splitlines()


def import_diff(ws, capsys, patch: str, *args: str) -> tuple[int, dict | None, list[str]]:
    """`vpatch import PATCH --version 1.0` of a plain diff (so with DIFF_AUTHORSHIP), and `args`, as `run`."""
    return run(ws, capsys, "import", patch, "--version", "1.0", *DIFF_AUTHORSHIP, *args)


def series_names(ws, version: str = "1.0") -> list[str]:
    lines = (ws.series_dir(version) / "series").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def parsed(ws, name: str, version: str = "1.0"):
    return parse_patch(ws.series_dir(version) / name)


def checkout_files(ws, version: str, paths) -> dict[str, bytes | None]:
    root = ws.checkout(version)
    return {p: (root / p).read_bytes() if (root / p).exists() else None for p in paths}


def expected(changes: dict) -> dict[str, bytes | None]:
    return {p: (c.encode() if isinstance(c, str) else c) for p, c in changes.items()}


def existing_series(ws) -> str:
    """One hand-made patch already in vllm 1.0's series."""
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    commit_in(ws.checkout("1.0"), {"setup.py": "from setuptools import setup\nsetup(name='vllm')\n"}, subject="Name it")
    assert ws.run("export", "1.0") == 0
    (name,) = series_names(ws)
    return name


def user_files(ws) -> dict:
    """The project's files, less the empty lock file the first series writer leaves (it holds nothing)."""
    return {k: v for k, v in ws.snapshot().items() if not (k == ".vpatch-txn.lock" and v == b"")}


def assert_refused(ws, capsys, args: list[str], message: str) -> str:
    before = user_files(ws)
    code, _, err = run(ws, capsys, "import", *args, "--json")
    assert code == 1
    assert len(err) == 1 and err[0].startswith("vpatch: error: "), err
    assert message in err[0], err[0]
    assert user_files(ws) == before
    return err[0]


# ---------------------------------------------------------------- plain diffs


def test_a_plain_diff_needs_an_author_and_a_date(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, FORK_CHANGES)
    diff = str(diff_ruN(tmp_path))
    both = assert_refused(
        ws, capsys, [diff, "--version", "1.0", "--feature", "kv-routing"], "carries no author or date"
    )
    assert "fork.diff" in both and "--author 'Name <email>' and --date YYYY-MM-DD" in both
    only_date = assert_refused(
        ws, capsys, [diff, "--version", "1.0", "--author", "A <a@b>", "--feature", "kv-routing"], "carries no date"
    )
    assert "--author" not in only_date.split("give", 1)[1]
    assert_refused(
        ws,
        capsys,
        [diff, "--version", "1.0", "--author", "A <a@b>", "--date", "April 2025", "--feature", "kv-routing"],
        "--date must be an ISO 8601 date",
    )
    code, _, _ = run(
        ws,
        capsys,
        "import",
        diff,
        "--version",
        "1.0",
        "--author",
        "Ada Fork <ada@fork.example>",
        "--date",
        "2025-04-01T12:30:00+02:00",
        "--feature",
        "kv-routing",
        "--json",
    )
    assert code == 0
    mail = parsed(ws, "0001-kv-routing-files.patch")
    assert mail.author == "Ada Fork <ada@fork.example>"
    text = (ws.series_dir("1.0") / "0001-kv-routing-files.patch").read_text()
    assert "\nDate: Tue, 1 Apr 2025 12:30:00 +0200\n" in text


def test_a_diff_against_stock_over_a_series_is_named_briefly_with_a_hint(pinned, tmp_path, capsys):
    """A post-release's diff taken against stock repeats what the series changes: the one error line names
    the first failing hunks, counts the rest, and says what to import instead."""
    ws = pinned
    existing_series(ws)  # changes setup.py
    hunks = "".join(f"@@ -{n},1 +{n},1 @@\n-not in the file {n}\n+changed {n}\n" for n in range(1, 40, 3))
    diff = tmp_path / "post.diff"
    diff.write_text(
        "--- a/setup.py\n+++ b/setup.py\n@@ -1,2 +1,2 @@\n from setuptools import setup\n-setup()\n+setup(name='x')\n"
        f"--- a/README.md\n+++ b/README.md\n{hunks}"
    )
    message = assert_refused(
        ws, capsys, [str(diff), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing"], "and 6 more"
    )
    assert message.count("does not apply") == 9  # the headline and 8 named hunks
    assert "1 of the 2 failing files are ones the series already changes" in message
    assert "--git REPO OLD..NEW" in message and len(message) < 1500


def test_diff_ruN_imports_as_one_patch_and_round_trips_into_the_overlay_wheel(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, FORK_CHANGES)
    patch_file = diff_ruN(tmp_path)
    code, data, _ = import_diff(ws, capsys, str(patch_file), "--feature", "kv-routing", "--json")
    assert code == 0
    (patch,) = data["patches"]
    assert patch["name"] == "0001-kv-routing-files.patch"
    assert set(patch["files"]) == {p for p in FORK_CHANGES}
    assert data["written"] is True
    assert series_names(ws) == ["0001-kv-routing-files.patch"]
    mail = parsed(ws, "0001-kv-routing-files.patch")
    assert mail.subject == "[kv-routing] 6 files"
    assert [(k, v) for k, v, _ in mail.headers] == [
        ("Upstream-Status", "Pending"),
        ("Feature", "kv-routing"),
        ("Origin", "import, file fork.diff"),
        ("Patch-File", "0001-kv-routing-files.patch"),
    ]
    assert mail.author == "Fork Dev <dev@fork.example>"
    kinds = {f.path: (f.old_path is None, f.new_path is None) for f in mail.files}
    assert kinds["vllm/core/kv_events.py"] == (True, False)  # added (diff -N's epoch timestamp)
    assert kinds["tests/test_core.py"] == (False, True)  # deleted
    assert ws.run("check", "1.0", "--no-wheels") == 0
    # the same import again gives the same bytes (fixed author and date)
    first = ws.snapshot()
    ws.write_series("1.0", {})
    (ws.series_dir("1.0") / "0001-kv-routing-files.patch").unlink()
    assert ws.run("import", str(patch_file), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing") == 0
    assert ws.snapshot()["vllm-1.0/0001-kv-routing-files.patch"] == first["vllm-1.0/0001-kv-routing-files.patch"]

    assert ws.run("apply", "1.0") == 0
    assert checkout_files(ws, "1.0", FORK_CHANGES) == expected(FORK_CHANGES)
    code, built, _ = run(ws, capsys, "build", "1.0", "-o", str(tmp_path / "dist"), "--no-verify", "--json")
    assert code == 0
    with zipfile.ZipFile(built["wheels"][0]["wheel"]) as wheel:
        for path, content in FORK_CHANGES.items():
            if path.startswith("vllm/"):
                assert wheel.read(path) == content.encode(), path
        assert "vllm/core/kv_events.py" in wheel.namelist()


def test_difflib_diff_and_git_diff_with_renames_import(pinned, tmp_path, capsys):
    ws = pinned
    # difflib: `--- a/x` / `+++ b/x` without timestamps, one file
    new = FORK_BLOCK_POOL.splitlines(keepends=True)
    old = module_text("block_pool").splitlines(keepends=True)
    (tmp_path / "lib.diff").write_text(
        "".join(difflib.unified_diff(old, new, "a/vllm/core/block_pool.py", "b/vllm/core/block_pool.py"))
    )
    assert (
        ws.run("import", str(tmp_path / "lib.diff"), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "pd-disagg")
        == 0
    )
    # git diff with a rename and an executable new file, made by real git in a fork repository
    repo = fork_repo(tmp_path)
    repo.run("mv", "vllm/engine/args.py", "vllm/engine/arguments.py")
    write_tree(repo.path, {"vllm/core/scheduler.py": FORK_SCHEDULER, "tools/run.sh": "#!/bin/sh\necho run\n"})
    (repo.path / "tools/run.sh").chmod(0o755)
    repo.run("add", "-A")
    diff = repo.run("-c", "diff.renames=true", "diff", "--cached", "-M").stdout
    assert b"rename from vllm/engine/args.py" in diff
    (tmp_path / "git.diff").write_bytes(diff)
    assert (
        ws.run("import", str(tmp_path / "git.diff"), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing")
        == 0
    )
    assert series_names(ws) == ["0001-pd-disagg-core-block-pool.patch", "0002-kv-routing-files.patch"]
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0") == 0
    root = ws.checkout("1.0")
    assert not (root / "vllm/engine/args.py").exists()
    assert (root / "vllm/engine/arguments.py").read_text() == module_text("args")
    assert (root / "tools/run.sh").stat().st_mode & 0o111
    assert (root / "vllm/core/block_pool.py").read_text() == FORK_BLOCK_POOL


# in the order of the diff (git's: by path), groups in the order of their first file
SPLIT_CASES = {
    "none": [(None, ["README.md", "vllm/core/block_pool.py", "vllm/core/scheduler.py", "vllm/engine/args.py"])],
    "per-file": [
        ("README.md", ["README.md"]),
        ("vllm/core/block_pool.py", ["vllm/core/block_pool.py"]),
        ("vllm/core/scheduler.py", ["vllm/core/scheduler.py"]),
        ("vllm/engine/args.py", ["vllm/engine/args.py"]),
    ],
    "per-dir": [
        ("top-level files", ["README.md"]),
        ("vllm/core/", ["vllm/core/block_pool.py", "vllm/core/scheduler.py"]),
        ("vllm/engine/", ["vllm/engine/args.py"]),
    ],
}


@pytest.mark.parametrize("mode", list(SPLIT_CASES))
def test_split_modes_group_files_and_number_after_the_existing_patches(pinned, tmp_path, capsys, mode):
    ws = pinned
    first = existing_series(ws)
    repo = fork_repo(tmp_path)
    changes = {
        "vllm/core/scheduler.py": FORK_SCHEDULER,
        "vllm/core/block_pool.py": FORK_BLOCK_POOL,
        "vllm/engine/args.py": module_text("args").replace("VALUE_1 = 1 ", "VALUE_1 = 100 "),
        "README.md": "# vllm, forked\n",
    }
    write_tree(repo.path, changes)
    (tmp_path / "changes.diff").write_bytes(repo.run("diff").stdout)
    code, data, _ = import_diff(
        ws,
        capsys,
        str(tmp_path / "changes.diff"),
        "--split",
        mode,
        "--feature",
        "pd-disagg",
        "--upstream-status",
        "Submitted [https://example.com/pr/7]",
        "--subject",
        "[Disagg] adopt the fork",
        "--json",
    )
    assert code == 0
    cases = SPLIT_CASES[mode]
    got = [(p["subject"], p["files"]) for p in data["patches"]]
    assert got == [("[Disagg] adopt the fork" + (f" ({label})" if label else ""), files) for label, files in cases]
    names = series_names(ws)
    assert names[0] == first and len(names) == 1 + len(cases)
    assert [n[:5] for n in names[1:]] == [f"{i:04d}-" for i in range(2, 2 + len(cases))]
    for name in names[1:]:
        mail = parsed(ws, name)
        assert mail.header("Upstream-Status") == "Submitted [https://example.com/pr/7]"
        assert mail.header("Feature") == "pd-disagg"
        assert mail.header("Patch-File") == name
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0", "--force") == 0
    assert checkout_files(ws, "1.0", changes) == expected(changes)


# ---------------------------------------------------------------- mails and git ranges


def make_history(tmp_path: Path) -> tuple[Git, str, list[str]]:
    """A fork repository: upstream, then three commits by two authors with DEP-3 headers of their own."""
    repo = fork_repo(tmp_path)
    upstream = repo.out("rev-parse", "HEAD")
    commits = [
        (
            {"vllm/core/scheduler.py": FORK_SCHEDULER},
            "[Core] scale values\n\nThe router wants them larger.\n\n"
            "Upstream-Status: Submitted [https://example.com/pr/1]\nFeature: kv-routing\n"
            "Patch-File: 0009-stale-name.patch\nSigned-off-by: Alice <alice@example.com>",
            ("Alice", "alice@example.com", "2024-05-01T10:00:00+02:00"),
        ),
        (
            {"vllm/core/kv_events.py": KV_EVENTS},
            "[V1][KV events] add the event module\n\nFeature: kv-routing",
            ("Bob", "bob@example.com", "2024-05-02T11:30:00+00:00"),
        ),
        (
            {"vllm/engine/args.py": module_text("args").replace("VALUE_30 = 30", "VALUE_30 = 3")},
            "[Engine] disagg args\n\nFeature: pd-disagg",
            ("Alice", "alice@example.com", "2024-05-03T09:00:00+00:00"),
        ),
    ]
    shas = []
    for files, message, (name, email, date) in commits:
        write_tree(repo.path, files)
        repo.run("add", "-A")
        env = {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_AUTHOR_DATE": date}
        repo.run("commit", "-q", "-F", "-", input=message.encode(), env={**AUTHOR_ENV, **env})
        shas.append(repo.out("rev-parse", "HEAD"))
    return repo, upstream, shas


def test_format_patch_mbox_with_several_mails(pinned, tmp_path, capsys):
    ws = pinned
    repo, upstream, _ = make_history(tmp_path)
    # what a contributor mails: numbered, with a cover letter and git's signature
    mbox = repo.run("format-patch", "--stdout", "--cover-letter", "--numbered", f"{upstream}..HEAD").stdout
    assert mbox.count(b"\nSubject: [PATCH ") == 4 and b"Subject: [PATCH 0/3]" in mbox
    (tmp_path / "series.mbox").write_bytes(mbox)
    code, data, err = run(ws, capsys, "import", str(tmp_path / "series.mbox"), "--version", "1.0", "--json")
    assert code == 0, err
    assert [p["subject"] for p in data["patches"]] == [
        "[Core] scale values",
        "[V1][KV events] add the event module",
        "[Engine] disagg args",
    ]
    assert any("cover letter" in note for note in data["notes"])
    names = series_names(ws)
    assert names == [
        "0001-core-scale-values.patch",
        "0002-v1-kv-events-add-the-event-module.patch",
        "0003-engine-disagg-args.patch",
    ]
    first, second, third = (parsed(ws, n) for n in names)
    assert first.author == "Alice <alice@example.com>" and first.date.endswith("+0200")
    assert "The router wants them larger." in first.message
    assert [(k, v) for k, v, _ in first.headers] == [
        ("Upstream-Status", "Submitted [https://example.com/pr/1]"),
        ("Feature", "kv-routing"),
        ("Signed-off-by", "Alice <alice@example.com>"),
        ("Origin", "import, file series.mbox, mail 2"),
        ("Patch-File", "0001-core-scale-values.patch"),  # the mail's stale Patch-File is replaced
    ]
    assert second.author == "Bob <bob@example.com>" and second.header("Upstream-Status") == "Pending"
    assert third.feature == "pd-disagg"
    assert ws.run("check", "1.0", "--no-wheels") == 0


def test_mail_without_a_feature_needs_the_option(pinned, tmp_path, capsys):
    ws = pinned
    repo = fork_repo(tmp_path)
    commit_in(repo.path, {"README.md": "# fork\n"}, subject="Docs", headers="Upstream-Status: Pending")
    (tmp_path / "one.patch").write_bytes(repo.run("format-patch", "--stdout", "-1").stdout)
    assert_refused(ws, capsys, [str(tmp_path / "one.patch"), "--version", "1.0"], "has no Feature: header")
    assert ws.run("import", str(tmp_path / "one.patch"), "--version", "1.0", "--feature", "pd-disagg") == 0
    assert parsed(ws, "0001-docs.patch").feature == "pd-disagg"


def test_git_range_becomes_one_patch_per_commit(pinned, tmp_path, capsys):
    ws = pinned
    repo, upstream, shas = make_history(tmp_path)
    code, data, err = run(
        ws, capsys, "import", "--git", str(repo.path), f"{upstream}..HEAD", "--version", "1.0", "--json"
    )
    assert code == 0, err
    assert [p["origin"] for p in data["patches"]] == [f"import, git forkrepo {sha}" for sha in shas]
    names = series_names(ws)
    assert len(names) == 3
    mails = [parsed(ws, n) for n in names]
    assert [m.author for m in mails] == [
        "Alice <alice@example.com>",
        "Bob <bob@example.com>",
        "Alice <alice@example.com>",
    ]
    assert mails[0].date == "Wed, 1 May 2024 10:00:00 +0200"
    assert [m.feature for m in mails] == ["kv-routing", "kv-routing", "pd-disagg"]
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0") == 0
    assert (ws.checkout("1.0") / "vllm/core/kv_events.py").read_text() == KV_EVENTS
    # a range with a merge commit is refused: it has no single diff to carry
    repo.run("checkout", "-q", "-b", "side", shas[0])
    commit_in(repo.path, {"docs/side.md": "side\n"}, subject="side", headers="Feature: kv-routing")
    repo.run("checkout", "-q", "-")
    repo.run("merge", "-q", "--no-edit", "side", env=AUTHOR_ENV)
    assert_refused(ws, capsys, ["--git", str(repo.path), f"{shas[2]}..HEAD", "--version", "1.0"], "holds merge commit")


# ---------------------------------------------------------------- wheel pairs


def test_wheel_pair_round_trip_and_binary_refusal(pinned, tmp_path, capsys):
    ws = pinned
    base = make_wheel(tmp_path / "stock", "1.0")  # the same members as the pinned stock wheel
    files = package_files("1.0")
    files.update({k: v for k, v in FORK_CHANGES.items() if k.startswith("vllm/")})
    files["vllm/_version.py"] = "__version__ = version = '1.0+fork'\n"  # generated: never imported
    fork = make_wheel(tmp_path / "fork", "1.0", files)
    args = ["--base", str(base), "--fork", str(fork), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing"]
    code, data, err = run(ws, capsys, "import", *args, "--split", "per-file", "--json")
    assert code == 0, err
    changed = ["vllm/core/block_pool.py", "vllm/core/kv_events.py", "vllm/core/scheduler.py", "vllm/engine/args.py"]
    assert [p["files"] for p in data["patches"]] == [[p] for p in changed]
    assert data["patches"][0]["origin"] == f"import, wheel {fork.name} vs {base.name}"
    assert any("dist-info" in s for s in data["skipped"]) and any("_version.py" in s for s in data["skipped"])
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0") == 0
    code, built, _ = run(ws, capsys, "build", "1.0", "-o", str(tmp_path / "dist"), "--no-verify", "--json")
    assert code == 0
    with zipfile.ZipFile(built["wheels"][0]["wheel"]) as wheel, zipfile.ZipFile(fork) as forked:
        for path in changed:
            assert wheel.read(path) == forked.read(path), path
        stock_so = zipfile.ZipFile(base).read("vllm/_C.abi3.so")
        assert wheel.read("vllm/_C.abi3.so") == stock_so

    # --base defaults to the pinned stock wheel; a fork whose compiled member differs is refused whole
    other = make_wheel(tmp_path / "binfork", "1.0", files, extra={"vllm/_C.abi3.so": b"\x7fELF" + bytes(5000)})
    message = assert_refused(
        ws,
        capsys,
        ["--fork", str(other), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing"],
        "binary difference in",
    )
    assert "vllm/_C.abi3.so" in message and "cannot be carried as a patch" in message


def test_sdist_pair_against_the_pinned_sdist(pinned, tmp_path, capsys):
    ws = pinned
    tree = default_tree("1.0")
    tree.update({k: v for k, v in FORK_CHANGES.items() if v is not None})
    del tree["tests/test_core.py"]
    tree["PKG-INFO"] = "Metadata-Version: 2.1\nName: vllm\nVersion: 1.0+fork\n"  # metadata: not compared
    fork = make_sdist(tmp_path / "forked", "1.0", tree)
    code, data, err = run(
        ws,
        capsys,
        "import",
        "--fork",
        str(fork),
        "--version",
        "1.0",
        *DIFF_AUTHORSHIP,
        "--feature",
        "kv-routing",
        "--json",
    )
    assert code == 0, err
    (patch,) = data["patches"]
    assert sorted(patch["files"]) == sorted(FORK_CHANGES)
    assert patch["origin"] == "import, sdist vllm-1.0.tar.gz vs vllm-1.0.tar.gz"
    assert data["source"]["base"] != data["source"]["fork"]  # the pinned sdist from the cache, not the fork
    assert "PKG-INFO (sdist metadata)" in data["skipped"]
    assert ws.run("check", "1.0", "--no-wheels") == 0
    assert ws.run("apply", "1.0") == 0
    assert checkout_files(ws, "1.0", FORK_CHANGES) == expected(FORK_CHANGES)


# ---------------------------------------------------------------- a large fork


def large_tree(modules: int = 30) -> dict[str, str | bytes]:
    tree = default_tree("2.0")
    for index in range(modules):
        lines = [f'"""Module m{index}."""', "", "import enum", "", "", "class Kind(enum.Enum):"]
        lines += [f"    KIND_{k} = {k}" for k in range(10)]
        lines += ["", ""] + [f"def f{k}(x):\n    return Kind.KIND_{k % 10}.value + x * {k}\n" for k in range(40)]
        tree[f"vllm/pkg{index % 6}/m{index}.py"] = "\n".join(lines) + "\n"
    tree["vllm/platforms/win.py"] = b"".join(b"LINE_%d = %d  # windows\r\n" % (i, i) for i in range(200))
    return tree


LICENSE = "# SPDX-License-Identifier: Apache-2.0\n# Copyright contributors to the fork\n" + "#\n" * 8


def large_fork(tree: dict) -> dict:
    fork = dict(tree)
    for path, text in tree.items():
        if path.startswith("vllm/pkg"):
            text = text.replace("KIND_", "VARIANT_").replace("class Kind", "class Variant").replace("Kind.", "Variant.")
            fork[path] = LICENSE + text + "\n\ndef added(x):\n    return x\n"
    for index in range(10):
        body = "".join(f"HELPER_{k} = {k * index}\n" for k in range(100))
        fork[f"vllm/helpers/h{index}.py"] = LICENSE + body
    win = tree["vllm/platforms/win.py"]
    fork["vllm/platforms/win.py"] = win.replace(b"LINE_50 = 50", b"LINE_50 = 5000").replace(b"LINE_150", b"ROW_150")
    return fork


def test_a_large_diff_with_added_files_and_a_crlf_file(workspace, tmp_path, capsys):
    ws = workspace
    tree = large_tree()
    ws.publish("2.0", tree)
    assert ws.run("pin", "add", "2.0") == 0
    fork = large_fork(tree)
    chunks = []
    for path in sorted(set(tree) | set(fork)):
        old, new = tree.get(path), fork.get(path)
        if old == new:
            continue
        a = (old.encode() if isinstance(old, str) else old or b"").splitlines(keepends=True)
        b = (new.encode() if isinstance(new, str) else new).splitlines(keepends=True)
        source = f"a/{path}".encode() if old is not None else b"/dev/null"
        chunks += difflib.diff_bytes(difflib.unified_diff, a, b, source, f"b/{path}".encode())
    diff = b"".join(chunks)
    assert diff.count(b"\n") > 3000 and diff.count(b"+++ b/") == 41
    assert b"-LINE_50 = 50  # windows\r\n+LINE_50 = 5000  # windows\r\n" in diff
    (tmp_path / "big.diff").write_bytes(diff)
    started = time.perf_counter()
    args = [
        "import",
        str(tmp_path / "big.diff"),
        "--version",
        "2.0",
        *DIFF_AUTHORSHIP,
        "--feature",
        "kv-routing",
        "--json",
    ]
    code, data, err = run(ws, capsys, *args)
    seconds = time.perf_counter() - started
    assert code == 0, err
    assert len(data["patches"][0]["files"]) == 41 and data["patches"][0]["added"] > 2000
    assert seconds < 20, seconds  # about a second on the 2-core machine
    (name,) = series_names(ws, "2.0")
    assert b"+LINE_50 = 5000  # windows\r\n" in (ws.series_dir("2.0") / name).read_bytes()
    assert ws.run("check", "2.0", "--no-wheels") == 0
    assert ws.run("apply", "2.0") == 0
    assert checkout_files(ws, "2.0", fork) == expected(fork)  # byte for byte, CRLF file included


# ---------------------------------------------------------------- against another version


@pytest.fixture
def other_versions(pinned, tmp_path):
    """A fork diff made on 1.0; 1.1 shifted scheduler.py by two lines; 1.2 changed a context line and
    dropped block_pool.py."""
    ws = pinned
    tree = default_tree("1.1")
    tree["vllm/core/scheduler.py"] = "# new line\n# another\n" + SCHEDULER
    ws.publish("1.1", tree)
    tree = default_tree("1.2")
    tree["vllm/core/scheduler.py"] = SCHEDULER.replace("VALUE_33 = 33", "VALUE_33 = 33  # touched upstream")
    del tree["vllm/core/block_pool.py"]
    ws.publish("1.2", tree)
    assert ws.run("pin", "add", "1.1") == 0 and ws.run("pin", "add", "1.2") == 0
    base_and_fork(tmp_path, {"vllm/core/scheduler.py": FORK_SCHEDULER, "vllm/core/block_pool.py": FORK_BLOCK_POOL})
    return ws, diff_ruN(tmp_path)


def test_failing_files_and_hunks_are_named_and_nothing_is_written(other_versions, capsys):
    ws, patch_file = other_versions
    message = assert_refused(
        ws,
        capsys,
        [str(patch_file), "--version", "1.2", *DIFF_AUTHORSHIP, "--feature", "kv-routing"],
        "does not apply with zero fuzz",
    )
    text = patch_file.read_text().splitlines()
    line = next(i for i, t in enumerate(text, start=1) if t.startswith("--- base/vllm/core/block_pool.py"))
    assert message.startswith(f"vpatch: error: {patch_file.name}:{line}: does not apply with zero fuzz to vllm 1.2: ")
    # VALUE_33, two lines above the change, is the second context line of the hunk at line 34
    assert "vllm/core/scheduler.py: hunk #2 at line 34 does not apply" in message
    assert "vllm/core/scheduler.py: would apply with fuzz 2" in message
    assert "vllm/core/block_pool.py: does not exist" in message
    assert "hunk #1" not in message  # the first scheduler hunk applies


def test_offsets_are_refused_unless_allowed(other_versions, capsys):
    ws, patch_file = other_versions
    message = assert_refused(
        ws, capsys, [str(patch_file), "--version", "1.1", *DIFF_AUTHORSHIP, "--feature", "kv-routing"], "offset"
    )
    assert "vllm/core/scheduler.py: hunk #1 applies at line 6 (offset +2 lines)" in message
    assert "vllm/core/scheduler.py: hunk #2 applies at line 36 (offset +2 lines)" in message
    assert "--allow-offset" in message
    code, data, _ = run(
        ws,
        capsys,
        "import",
        str(patch_file),
        "--version",
        "1.1",
        *DIFF_AUTHORSHIP,
        "--feature",
        "kv-routing",
        "--allow-offset",
        "--json",
    )
    assert code == 0 and any("offset +2 lines" in n for n in data["notes"])
    assert ws.run("check", "1.1", "--no-wheels") == 0  # rendered at the lines where it applies


# ---------------------------------------------------------------- bad input

GIT_HEADER = "diff --git a/{0} b/{0}\n--- a/{0}\n+++ b/{0}\n@@ -1 +1 @@\n-old\n+new\n"
BAD_INPUTS = {
    "not-a-diff": ("Dear maintainer,\nplease apply my changes.\n", "not a diff"),
    "dotdot": ("--- a/../evil.py\n+++ b/../evil.py\n@@ -1 +1 @@\n-a\n+b\n", "leaves the tree through '..'"),
    "absolute": ("--- /etc/passwd\n+++ /etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "absolute path '/etc/passwd'"),
    "dot-git": (GIT_HEADER.format(".git/config"), "inside .git"),
    "nested-dot-git": (GIT_HEADER.format("vllm/.git/hooks/post-checkout"), "inside .git"),
    "binary": (
        "diff --git a/vllm/_C.abi3.so b/vllm/_C.abi3.so\nindex 1111111..2222222 100755\nGIT binary patch\n"
        "literal 3\nKcmZ?wWB>pF00031\n\nliteral 0\nHcmV?d00001\n\n",
        "binary change to vllm/_C.abi3.so",
    ),
    "only-in": ("Only in fork/vllm: extra.py\n", "carries no content"),
    "context-diff": ("*** a/README.md\n--- b/README.md\n***************\n", "context diffs are not supported"),
    "truncated": ("--- a/README.md\n+++ b/README.md\n@@ -1,3 +1,3 @@\n", "hunk #1 has no lines"),
    "double-slash": (
        "--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
        "fork.diff:1: patch touches a path outside the tree: absolute path '/etc/passwd'",
    ),
    "double-slash-git": (
        "diff --git a//etc/passwd b//etc/passwd\n--- a//etc/passwd\n+++ b//etc/passwd\n@@ -1 +1 @@\n-a\n+b\n",
        "fork.diff:1: patch touches a path outside the tree: absolute path '/etc/passwd'",
    ),
    "double-slash-inside": (
        "--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# vllm\n+# x\n"
        "--- a/vllm//core/x.py\n+++ b/vllm//core/x.py\n@@ -1 +1 @@\n-a\n+b\n",
        "fork.diff:6: patch touches a path outside the tree: path 'vllm//core/x.py' has an empty component",
    ),
    "dotdot-after-prefix": (
        "--- a/../../x\n+++ b/../../x\n@@ -1 +1 @@\n-a\n+b\n",
        "fork.diff:1: patch touches a path outside the tree: path 'a/../../x' leaves the tree through '..'",
    ),
    "dot-then-dotdot": (
        "diff --git a/./../x b/./../x\n--- a/./../x\n+++ b/./../x\n@@ -1 +1 @@\n-a\n+b\n",
        "fork.diff:1: patch touches a path outside the tree: path 'a/./../x' leaves the tree through '..'",
    ),
    "symlink-out": (
        "diff --git a/vllm/link b/vllm/link\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n"
        "+++ b/vllm/link\n@@ -0,0 +1 @@\n+../../etc/passwd\n\\ No newline at end of file\n",
        "fork.diff:1: symlink change to b/vllm/link: not imported",
    ),
    "not-utf8": ("--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-# vllm\n+# vllm \udcff\n", "not UTF-8"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_writes_nothing(pinned, tmp_path, capsys, case):
    ws = pinned
    existing_series(ws)
    text, message = BAD_INPUTS[case]
    path = tmp_path / "fork.diff"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert_refused(ws, capsys, [str(path), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing"], message)


def test_option_errors(pinned, tmp_path, capsys):
    ws = pinned
    base_and_fork(tmp_path, {"README.md": "# fork\n"})
    patch = str(diff_ruN(tmp_path))
    assert_refused(
        ws, capsys, [patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "nope"], "unknown feature 'nope'"
    )
    assert_refused(ws, capsys, [patch, "--version", "1.0"], "has no Feature: header")
    assert_refused(
        ws,
        capsys,
        [patch, "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing", "--upstream-status", "Maybe"],
        "Maybe",
    )
    assert_refused(ws, capsys, [patch, "--version", "1.0", "--git", ".", "a..b"], "exactly one source")
    assert_refused(
        ws, capsys, [patch, "--version", "9.9", *DIFF_AUTHORSHIP, "--feature", "kv-routing"], "no pin for vllm 9.9"
    )


def test_dry_run_checks_everything_and_writes_nothing(pinned, tmp_path, capsys):
    ws = pinned
    existing_series(ws)
    base_and_fork(tmp_path, FORK_CHANGES)
    patch = str(diff_ruN(tmp_path))
    before = ws.snapshot()
    code, data, _ = import_diff(ws, capsys, patch, "--feature", "kv-routing", "--dry-run", "--json")
    assert code == 0 and data["written"] is False and data["existing"] == 1
    assert [p["name"] for p in data["patches"]] == ["0002-kv-routing-files.patch"]
    assert ws.snapshot() == before


def test_the_command_offers_the_importers_split_modes():
    from toolkit.commands.import_ import SPLIT_CHOICES
    from toolkit.importer import SPLIT_MODES

    assert SPLIT_CHOICES == SPLIT_MODES


def test_an_imported_patch_is_numbered_after_the_highest_number_the_project_used(pinned, tmp_path, capsys):
    """As `vpatch export` numbers new work: after every number used in any release's series and retired/, so a
    number names one patch in every release (here 0009, retired in 1.1, and 0004, retired in 1.0 itself)."""
    ws = pinned
    first = existing_series(ws)
    (ws.series_dir("1.0") / "retired").mkdir()
    (ws.series_dir("1.0") / "retired" / "0004-v1-retired-here.patch").write_bytes(b"retired in 1.0\n")
    ws.publish("1.1")
    assert ws.run("pin", "add", "1.1") == 0
    (ws.series_dir("1.1") / "retired").mkdir(parents=True)
    (ws.series_dir("1.1") / "retired" / "0009-v1-retired-at-1-1.patch").write_bytes(b"retired at 1.1\n")
    base_and_fork(tmp_path, {"README.md": "# vllm, forked\n"})
    path = diff_ruN(tmp_path)
    code, data, err = import_diff(ws, capsys, str(path), "--feature", "kv-routing", "--json")
    assert code == 0, err
    assert series_names(ws) == [first, data["patches"][0]["name"]]
    assert data["patches"][0]["name"].startswith("0010-")
