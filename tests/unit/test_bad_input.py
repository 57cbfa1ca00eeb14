"""Bad input at the command line: every mistake is one clear `path:line: message`, a non-zero exit, nothing written.

The `exported` fixture is a pinned vllm 1.0 with a two-patch series made the way a maintainer makes it
(`vpatch apply`, commits, `vpatch export`); each test corrupts a copy of it in one way. To keep the module
fast, the index and the download cache are shared by its tests and the series is made only once.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import LocalIndex, Workspace, commit_in, module_text

P1 = "0001-core-bigger-value.patch"
P2 = "0002-engine-smaller-value.patch"
SERIES_DIR = "project/patches/vllm-1.0"  # as printed: relative to the test's working directory
PINS = "project/patches/pins.toml"
STATUS_FORMS = (
    "Pending, Submitted [url], Backport [url], Accepted [version|commit], Inappropriate [reason], Denied [url]"
)

# Lines of P1: 1 mbox From, 2 From:, 3 Date:, 4 Subject:, 6 "Because.", 8 Upstream-Status, 9 Feature,
# 10 Patch-File, 11 ---, 15 diff --git.  Lines of P2 (no body): 6 Upstream-Status, 7 Feature, 8 Patch-File.
# The series file: 1 comment, 2 blank, 3 P1, 4 P2.


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory):
    """One index for the module (overrides conftest's per-test one, whose shutdown alone takes ~0.25 s)."""
    served = LocalIndex(tmp_path_factory.mktemp("index"))
    served.start()
    yield served
    served.stop()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory, index: LocalIndex) -> Workspace:
    root = tmp_path_factory.mktemp("template")
    ws = Workspace(root / "project", root / "cache", index)
    ws.publish("1.0")
    assert ws.run("pin", "add", "1.0") == 0
    ws.write_series("1.0", {})
    assert ws.run("apply", "1.0") == 0
    checkout = ws.checkout("1.0")
    scheduler = module_text("scheduler").replace("VALUE_10 = 10", "VALUE_10 = 1000")
    commit_in(checkout, {"vllm/core/scheduler.py": scheduler}, subject="[Core] bigger value", body="Because.")
    args = module_text("args").replace("VALUE_20 = 20", "VALUE_20 = 2")
    commit_in(
        checkout,
        {"vllm/engine/args.py": args},
        subject="[Engine] smaller value",
        headers="Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]\nFeature: pd-disagg",
    )
    assert ws.run("export", "1.0") == 0
    assert sorted(p.name for p in ws.series_dir("1.0").iterdir()) == [P1, P2, "series"]
    return ws


@pytest.fixture
def exported(template: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Workspace:
    """A fresh copy of the template's patches/ (no checkout yet), sharing its download cache."""
    monkeypatch.chdir(tmp_path)
    ws = Workspace(tmp_path / "project", template.cache, template.index)
    shutil.copytree(template.patches, ws.patches, dirs_exist_ok=True)
    return ws


def with_checkout(ws: Workspace) -> Path:
    assert ws.run("apply", "1.0") == 0
    return ws.checkout("1.0")


def run(ws, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = ws.run(*args)
    out, err = capsys.readouterr()
    return code, out, err


def error_line(err: str) -> str:
    """The single `vpatch: error:` line of a failed command, without that prefix."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vpatch: error: "), err
    return lines[0].removeprefix("vpatch: error: ")


def fails(ws, capsys, *args: str) -> str:
    """Run a command that must fail with one error line and leave patches/ exactly as it was."""
    before = ws.snapshot()
    code, _out, err = run(ws, capsys, *args)
    assert code != 0
    assert ws.snapshot() == before
    return error_line(err)


def check_problems(ws, capsys, *args: str) -> list[str]:
    """`vpatch check` on a broken series: exit 1, nothing written, the problem lines it printed."""
    before = ws.snapshot()
    code, out, err = run(ws, capsys, "check", *args)
    assert code == 1, (out, err)
    assert ws.snapshot() == before
    assert "Traceback" not in err and "vpatch: error" not in err
    return out.splitlines()


def edit(ws, name: str, old: str | bytes, new: str | bytes, *, every: bool = False) -> Path:
    """Replace `old` (which must occur exactly once, unless `every`) in a patch file of the series."""
    path = ws.series_dir("1.0") / name
    data = path.read_bytes()
    old_b = old.encode() if isinstance(old, str) else old
    new_b = new.encode() if isinstance(new, str) else new
    assert data.count(old_b) >= 1 if every else data.count(old_b) == 1, (old, data.decode("utf-8", "replace"))
    path.write_bytes(data.replace(old_b, new_b))
    return path


# ---------------------------------------------------------------- malformed patch mails

MAIL_DEFECTS = [
    pytest.param(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n",
        "Hello 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n",
        1,
        "not a git format-patch mail (first line must be 'From <sha> ...')",
        id="first-line-not-from",
    ),
    pytest.param(
        "Date: Fri",
        "X-Mailer this line has no colon\nDate: Fri",
        3,
        "malformed mail header line 'X-Mailer this line has no colon'",
        id="header-without-colon",
    ),
    pytest.param(
        "Subject: [PATCH] [Core] bigger value\n", "", 1, "mail header 'Subject:' is missing", id="missing-subject"
    ),
    pytest.param(
        "From: Upstream Dev <dev@upstream.example>\n", "", 1, "mail header 'From:' is missing", id="missing-from"
    ),
    pytest.param("Date: Fri, 1 Mar 2024 12:00:00 +0000\n", "", 1, "mail header 'Date:' is missing", id="missing-date"),
    pytest.param(
        "Upstream-Status: Pending\n",
        "Upstream-Status:Pending\n",
        8,
        "malformed header line 'Upstream-Status:Pending'",
        id="dep3-header-without-space",
    ),
    pytest.param("Because.", b"Because \xff\xfe.", 6, "patch is not valid UTF-8", id="non-utf8-body"),
    pytest.param(
        " VALUE_11 = 11",
        b" VALUE_11 = 11 \xe9",
        25,
        "patch is not valid UTF-8",
        id="non-utf8-diff",
    ),
    pytest.param(
        "vllm/core/scheduler.py",
        "../x",
        15,
        "patch touches a path outside the tree: path '../x' leaves the tree through '..'",
        id="dotdot",
    ),
    pytest.param(
        "a/vllm/core/scheduler.py",
        "a/vllm/../../x",
        15,
        "patch touches a path outside the tree: path 'vllm/../../x' leaves the tree through '..'",
        id="dotdot-inside",
    ),
    pytest.param(
        "vllm/core/scheduler.py",
        "/etc/passwd",
        15,
        "patch touches a path outside the tree: absolute path '/etc/passwd'",
        id="absolute",
    ),
    pytest.param(
        "vllm/core/scheduler.py",
        ".git/config",
        15,
        "patch touches a path outside the tree: path '.git/config' is inside .git",
        id="dot-git",
    ),
]


@pytest.mark.parametrize(("old", "new", "line", "message"), MAIL_DEFECTS)
def test_malformed_mail(exported, capsys, old, new, line: int, message: str):
    ws = exported
    edit(ws, P1, old, new, every="scheduler.py" in old)  # a path is renamed in every line that names it
    where = f"{SERIES_DIR}/{P1}:{line}"
    assert check_problems(ws, capsys, "1.0") == [f"{where}: {message}"]
    assert fails(ws, capsys, "apply", "1.0") == f"{where}: {message}"
    assert not ws.checkout("1.0").exists()  # refused before making a checkout
    code, out, _ = run(ws, capsys, "status", "1.0", "--json")
    assert code == 0
    assert json.loads(out)["versions"][0]["error"] == f"{where}: {message}"


def test_crlf_mail(exported, capsys):
    ws = exported
    path = ws.series_dir("1.0") / P1
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    message = "CRLF line ending in the mail header (the patch file was converted; restore LF)"
    assert check_problems(ws, capsys, "1.0") == [f"{SERIES_DIR}/{P1}:2: {message}"]
    assert fails(ws, capsys, "apply", "1.0") == f"{SERIES_DIR}/{P1}:2: {message}"


def test_crlf_dep3_headers(exported, capsys):
    ws = exported
    edit(ws, P2, "Feature: pd-disagg\n", "Feature: pd-disagg\r\n")
    assert check_problems(ws, capsys, "1.0") == [f"{SERIES_DIR}/{P2}:7: CRLF line ending in the patch headers"]


# ---------------------------------------------------------------- DEP-3 headers


HEADER_DEFECTS = [
    pytest.param(
        P1,
        "Upstream-Status: Pending",
        "Upstream-Status: Maybe",
        8,
        f"unknown Upstream-Status 'Maybe' (expected one of: {STATUS_FORMS})",
        id="unknown-status",
    ),
    pytest.param(
        P1,
        "Upstream-Status: Pending",
        "Upstream-Status: Submitted",
        8,
        "Upstream-Status Submitted needs a bracketed detail: Submitted [url]",
        id="submitted-without-url",
    ),
    pytest.param(
        P2,
        "Submitted [https://github.com/vllm-project/vllm/pull/1]",
        "Submitted []",
        6,
        "Upstream-Status Submitted needs a bracketed detail: Submitted [url]",
        id="submitted-empty-url",
    ),
    pytest.param(
        P2,
        "Submitted [https://github.com/vllm-project/vllm/pull/1]",
        "Submitted [https://github.com/vllm-project/vllm/pull/1",
        6,
        "malformed Upstream-Status 'Submitted [https://github.com/vllm-project/vllm/pull/1' "
        f"(expected one of: {STATUS_FORMS})",
        id="status-unclosed-bracket",
    ),
    pytest.param(
        P1,
        "Feature: kv-routing",
        "Feature: warp-drive",
        9,
        "unknown feature 'warp-drive' (declared in pins.toml [features]: kv-routing, pd-disagg)",
        id="unknown-feature",
    ),
    pytest.param(P1, "Feature: kv-routing\n", "", 9, "required header Feature: is missing", id="missing-feature"),
    pytest.param(
        P2,
        "Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]\n",
        "",
        7,
        "required header Upstream-Status: is missing",
        id="missing-status",
    ),
    pytest.param(
        P1,
        "Feature: kv-routing\n",
        "Feature: kv-routing\nFeature: pd-disagg\n",
        10,
        "header Feature appears twice (first on line 9)",
        id="duplicate-header",
    ),
    pytest.param(
        P1,
        "Upstream-Status: Pending\n",
        "Upstream-Status: Pending\nupstream-status: Pending\n",
        9,
        "header upstream-status appears twice (first on line 8)",
        id="duplicate-header-other-case",
    ),
]


@pytest.mark.parametrize(("name", "old", "new", "line", "message"), HEADER_DEFECTS)
def test_bad_dep3_header(exported, capsys, name: str, old: str, new: str, line: int, message: str):
    ws = exported
    edit(ws, name, old, new)
    # The patch still applies and re-exports to itself, so this is the only problem.
    assert check_problems(ws, capsys, "1.0") == [f"{SERIES_DIR}/{name}:{line}: {message}"]


def test_patch_file_header_not_matching_the_file_name(exported, capsys):
    edit(exported, P1, f"Patch-File: {P1}", "Patch-File: 0001-core.patch")
    assert check_problems(exported, capsys, "1.0") == [
        f"{SERIES_DIR}/{P1}:10: Patch-File header says '0001-core.patch' but the file is '{P1}'",
        f"{SERIES_DIR}/0001-core.patch: re-export creates this file; run `vpatch export`",
    ]


# ---------------------------------------------------------------- series structure


def series_file(ws) -> Path:
    return ws.series_dir("1.0") / "series"


def test_series_entry_without_file(exported, capsys):
    ws = exported
    series_file(ws).write_text(series_file(ws).read_text() + "0003-missing.patch\n")
    expected = f"{SERIES_DIR}/series:5: series lists 0003-missing.patch but the file does not exist"
    assert check_problems(ws, capsys, "1.0") == [expected]
    assert fails(ws, capsys, "apply", "1.0") == expected


def test_unlisted_patch_file(exported, capsys):
    ws = exported
    (ws.series_dir("1.0") / "0003-stray.patch").write_bytes((ws.series_dir("1.0") / P1).read_bytes())
    assert check_problems(ws, capsys, "1.0") == [f"{SERIES_DIR}/0003-stray.patch: patch file is not listed in series"]


def test_duplicate_series_entry(exported, capsys):
    ws = exported
    series_file(ws).write_text(series_file(ws).read_text() + P1 + "\n")
    expected = f"{SERIES_DIR}/series:5: {P1} is listed twice (first on line 3)"
    assert check_problems(ws, capsys, "1.0") == [expected]
    assert fails(ws, capsys, "apply", "1.0") == expected


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (f"# test series\n\n{P1}\n{P2}\n../{P1}\n", 5, f"series entry '../{P1}' must be a file name in this directory"),
        (f"# test series\n\n{P1}\n{P2} -p0\n", 4, "unsupported series options '-p0' (only -p1)"),
    ],
)
def test_bad_series_line(exported, capsys, text: str, line: int, message: str):
    ws = exported
    series_file(ws).write_text(text)
    expected = f"{SERIES_DIR}/series:{line}: {message}"
    assert check_problems(ws, capsys, "1.0") == [expected]
    assert fails(ws, capsys, "apply", "1.0") == expected


def test_crlf_series_file(exported, capsys):
    ws = exported
    series_file(ws).write_bytes(series_file(ws).read_bytes().replace(b"\n", b"\r\n"))
    expected = f"{SERIES_DIR}/series:1: CRLF line ending in series file"
    assert check_problems(ws, capsys, "1.0") == [expected]
    assert fails(ws, capsys, "apply", "1.0") == expected


def test_duplicate_subjects(exported, capsys):
    ws = exported
    edit(ws, P2, "Subject: [PATCH] [Engine] smaller value", "Subject: [PATCH] [Core] bigger value")
    assert check_problems(ws, capsys, "1.0") == [
        f"{SERIES_DIR}/{P2}: subject '[Core] bigger value' is also used by {P1}"
    ]


# ---------------------------------------------------------------- pins and versions


@pytest.mark.parametrize("command", ["apply", "status", "check", "export"])
def test_missing_pin(exported, capsys, command: str):
    message = fails(exported, capsys, command, "9.9")
    assert message == f"{PINS}: no pin for vllm 9.9 (pinned: 1.0); run `vpatch pin add 9.9`"


@pytest.mark.parametrize(
    "argv",
    [
        ("apply", "not-a-version"),
        ("status", "1.0", "x.y"),
        ("check", "x.y"),
        ("export", "1.0/../2"),
        ("pin", "add", "x.y"),
        ("pin", "verify", "x.y"),
    ],
)
def test_invalid_version(exported, capsys, argv: tuple[str, ...]):
    assert fails(exported, capsys, *argv) == f"invalid version {argv[-1]!r}"


def test_pin_add_twice(exported, capsys):
    assert fails(exported, capsys, "pin", "add", "1.0") == (
        f"{PINS}: vllm 1.0 is already pinned (use --replace to re-pin)"
    )


def test_pin_add_unpublished_version(exported, capsys):
    # --json keeps the progress steps off stderr, leaving just the error
    assert fails(exported, capsys, "pin", "add", "7.0", "--json") == "vllm 7.0: the index has no sdist for this release"


def pins_line(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), start=1) if needle in line)


PIN = '[pins."1.0"]'
SDIST_SHA = r'(sdist = \{file = "vllm-1\.0\.tar\.gz", sha256 = )"[0-9a-f]{64}"'
WHEEL_SHA = r'(\{file = "vllm-1\.0-[^"]+\.whl", sha256 = )"[0-9a-f]{64}"'
WHEELS = r"(?ms)^wheels = \[.*?^\]$"  # the pinned stock wheels: an array of inline tables
PINS_DEFECTS = [
    # (regex, replacement, the line the error names, message; {wheel} is the pinned wheel's file name)
    pytest.param('source = "sdist"', "source = sdist", "source =", "invalid TOML: ", id="bad-toml"),
    pytest.param(
        SDIST_SHA,
        r'\1"abc"',
        PIN,
        "pin 1.0: sdist vllm-1.0.tar.gz: sha256 'abc' is not 64 lowercase hex digits",
        id="short-sha256",
    ),
    pytest.param(
        SDIST_SHA,
        r'\1"' + "AB" * 32 + '"',
        PIN,
        f"pin 1.0: sdist vllm-1.0.tar.gz: sha256 '{'AB' * 32}' is not 64 lowercase hex digits",
        id="uppercase-sha256",
    ),
    pytest.param(
        SDIST_SHA,
        r"\g<1>12",
        PIN,
        "pin 1.0: sdist vllm-1.0.tar.gz: sha256 12 is not 64 lowercase hex digits",
        id="sha256-not-a-string",
    ),
    pytest.param(
        WHEEL_SHA,
        r'\1"0"',
        PIN,
        "pin 1.0: wheel {wheel}: sha256 '0' is not 64 lowercase hex digits",
        id="wheel-bad-sha256",
    ),
    pytest.param(
        'file = "vllm-1.0.tar.gz"',
        'file = "vllm-2.0.tar.gz"',
        PIN,
        "pin 1.0: sdist vllm-2.0.tar.gz is not vllm 1.0",
        id="sdist-other-version",
    ),
    pytest.param(
        'file = "vllm-1.0.tar.gz"',
        'file = "torch-1.0.tar.gz"',
        PIN,
        "pin 1.0: sdist torch-1.0.tar.gz is not vllm 1.0",
        id="sdist-other-project",
    ),
    pytest.param(
        r'file = "vllm-1\.0-(cp[^"]+\.whl)"',
        r'file = "vllm-2.0-\1"',
        PIN,
        "pin 1.0: wheel {wheel_2} is not vllm 1.0",
        id="wheel-other-version",
    ),
    pytest.param(
        'file = "vllm-1.0.tar.gz"',
        'file = "vllm.zip"',
        PIN,
        "pin 1.0: invalid sdist file name 'vllm.zip': ",
        id="sdist-bad-name",
    ),
    pytest.param(
        'file = "vllm-1.0.tar.gz"', "file = 7", PIN, "pin 1.0: invalid sdist file name 7", id="sdist-name-not-a-string"
    ),
    pytest.param(PIN, '[pins."one"]', '[pins."one"]', "invalid version 'one'", id="bad-version-key"),
    pytest.param(
        'source = "sdist"',
        'source = "svn"',
        PIN,
        "pin 1.0: source must be one of sdist, git, not 'svn'",
        id="bad-source",
    ),
    pytest.param(
        'commit = ""', 'commit = "abc123"', PIN, "pin 1.0: commit 'abc123' is not a full 40-hex", id="short-commit"
    ),
    pytest.param('commit = ""', "commit = 5", PIN, "pin 1.0: commit must be a string, not 5", id="int-commit"),
    pytest.param(WHEELS, "wheels = 5", PIN, "pin 1.0: wheels must be a list", id="wheels-not-list"),
    pytest.param(WHEELS, 'wheels = ["x.whl"]', PIN, "pin 1.0: wheel entry must be a table", id="wheel-not-table"),
    # unknown keys are refused, not ignored, with the key they were probably meant to be
    pytest.param(
        'source = "sdist"',
        'sorce = "sdist"',
        "sorce =",
        "pin 1.0: unknown key 'sorce' (did you mean 'source'?)",
        id="misspelt-pin-key",
    ),
    pytest.param(
        "base-commit = ",
        "base_commit = ",
        "base_commit =",
        "pin 1.0: unknown key 'base_commit' (did you mean 'base-commit'?)",
        id="pin-key-with-underscore",
    ),
    pytest.param(
        'tag = "v1.0"',
        'tag = "v1.0"\nmirror = "https://x"',
        "mirror =",
        "pin 1.0: unknown key 'mirror' (known keys: source, remote, tag, commit, base-commit, sdist, wheels, flavors)",
        id="unknown-pin-key",
    ),
    pytest.param(
        'project = "vllm"',
        'projekt = "vllm"',
        "projekt =",
        "unknown key 'projekt' (did you mean 'project'?)",
        id="misspelt-top-level-key",
    ),
    pytest.param(PIN, '[pin."1.0"]', '[pin."1.0"]', "unknown key 'pin' (did you mean 'pins'?)", id="pin-table"),
    pytest.param(
        'sdist = {file = "vllm-1.0.tar.gz", sha256 = ',
        'sdist = {file = "vllm-1.0.tar.gz", sha265 = ',
        "sdist = {",
        "pin 1.0: sdist: unknown key 'sha265' (did you mean 'sha256'?)",
        id="misspelt-sdist-key",
    ),
    pytest.param(
        r'(\{file = "vllm-1\.0-[^"]+\.whl", )sha256',
        r"\1sha_256",
        "sha_256",
        "pin 1.0: wheel: unknown key 'sha_256' (did you mean 'sha256'?)",
        id="misspelt-wheel-key",
    ),
    pytest.param(
        r'kv-routing = ("[^"]*")',
        r'kv-routing = {description = \1, native_since = "0.9"}',
        "kv-routing =",
        "feature kv-routing: unknown key 'native_since' (did you mean 'native-since'?)",
        id="misspelt-feature-key",
    ),
]


@pytest.mark.parametrize(("pattern", "replacement", "at", "message"), PINS_DEFECTS)
def test_malformed_pins_toml(exported, capsys, pattern: str, replacement: str, at: str, message: str):
    ws = exported
    pins = ws.patches / "pins.toml"
    text = pins.read_text()
    wheel = re.search(r'file = "(vllm-1\.0-[^"]+\.whl)"', text)[1]
    literal = pattern in text
    text, count = re.subn(re.escape(pattern) if literal else pattern, replacement, text)
    assert count == 1, pattern
    pins.write_text(text)
    line = pins_line(text, at)
    message = message.format(wheel=wheel, wheel_2=wheel.replace("vllm-1.0-", "vllm-2.0-"))
    for command in ("status", "check", "apply 1.0", "pin verify"):
        error = fails(ws, capsys, *command.split())
        assert error.startswith(f"{PINS}:{line}: {message}"), (command, error)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("pins = 3\n", None, "[pins] must be a table of versions", id="pins-not-a-table"),
        pytest.param("project = 3\n", None, "project must be a distribution name, not 3", id="project-int"),
        pytest.param(
            "[features]\nkv = 1\n", None, "[features] must map feature names to a description or a table", id="features"
        ),
        pytest.param(
            '[pins."1.0"]\nsource = "git"\nremote = "https://x"\n', 1, "pin 1.0: source is 'git' but", id="git-no-tag"
        ),
        pytest.param('[pins."1.0"]\nsource = "sdist"\n', 1, "pin 1.0: source is 'sdist' but no sdist", id="no-sdist"),
        pytest.param('[pins."1.0"]\n', 1, "pin 1.0: source is 'sdist' but no sdist", id="empty-pin"),
    ],
)
def test_malformed_pins_toml_structure(exported, capsys, text: str, line: int | None, message: str):
    ws = exported
    (ws.patches / "pins.toml").write_text(text)
    where = f"{PINS}:{line}" if line else PINS
    assert fails(ws, capsys, "status").startswith(f"{where}: {message}")


def test_pins_toml_not_utf8(exported, capsys):
    ws = exported
    pins = ws.patches / "pins.toml"
    pins.write_bytes(pins.read_bytes().replace(b"# Pinned upstream", b"# Pinn\xe9d upstream"))
    assert fails(ws, capsys, "status") == f"{PINS}:1: pins file is not valid UTF-8"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param(
            '[tool.vpatch]\npatches-dri = "patches"\n',
            2,
            "[tool.vpatch]: unknown key 'patches-dri' (did you mean 'patches-dir'?)",
            id="misspelt",
        ),
        pytest.param(
            '[project]\nname = "x"\n\n[tool.vpatch]\ncache_dir = "c"\nindex = "http://x"\n',
            6,
            "[tool.vpatch]: unknown key 'index' (did you mean 'index-url'?)",
            id="after-other-tables",
        ),
        pytest.param(
            "[tool.vpatch]\npatches-dir = 3\n", 2, "[tool.vpatch]: patches-dir must be a string, not 3", id="not-str"
        ),
    ],
)
def test_bad_tool_vpatch_table(exported, capsys, text: str, line: int, message: str):
    (exported.root / "pyproject.toml").write_text(text)
    for command in ("status", "pin list", "pin add 1.1"):
        assert fails(exported, capsys, *command.split()) == f"project/pyproject.toml:{line}: {message}"


def test_no_pins_file(workspace, capsys):
    message = fails(workspace, capsys, "status")
    assert message == f"{PINS}: pins file does not exist (run `vpatch pin add VERSION`)"


# ---------------------------------------------------------------- vpatch check: apply and re-export


def test_check_good_series(exported, capsys):
    code, out, err = run(exported, capsys, "check")
    assert (code, out) == (0, "")
    assert "vllm 1.0: 2 patches, ok" in err
    code, out, err = run(exported, capsys, "check", "1.0", "--no-wheels")
    assert (code, out) == (0, "")


def test_check_warns_about_a_patch_without_a_rationale(exported, capsys):
    """P2's mail says nothing but its subject and headers (P1 says "Because."): it is warned about until it
    says why the series carries it; check still passes."""
    ws = exported
    code, out, err = run(ws, capsys, "check", "1.0", "--no-wheels")
    assert (code, out) == (0, "")  # a warning, not a problem
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {SERIES_DIR}/{P2}:6: no rationale"), warnings
    path = ws.series_dir("1.0") / P2
    head, _, rest = path.read_text().partition("\n\n")
    path.write_text(head + "\n\nvLLM 1.0 lacks this; it can go once upstream has it.\n\n" + rest)
    code, out, _ = run(ws, capsys, "check", "1.0", "--no-wheels", "--json")
    (version,) = json.loads(out)["versions"]
    assert code == 0 and version["warnings"] == []


def test_check_patch_that_no_longer_applies(exported, capsys):
    ws = exported
    edit(ws, P2, " VALUE_18 = 18  # args line 18", " VALUE_18 = 81  # args line 18")
    assert check_problems(ws, capsys, "1.0") == [
        f"{SERIES_DIR}/{P2}: does not apply with zero fuzz: vllm/engine/args.py: hunk #1 at line 19 does not apply"
    ]


def test_apply_stops_at_a_patch_that_no_longer_applies(exported, capsys):
    ws = exported
    edit(ws, P2, " VALUE_18 = 18  # args line 18", " VALUE_18 = 81  # args line 18")
    before = ws.snapshot()
    code, out, err = run(ws, capsys, "apply", "1.0")
    assert code == 1
    assert ws.snapshot() == before
    assert f"stopped at {P2}" in err and "vpatch apply --continue" in err
    assert "failed" in out  # the outcome table


@pytest.mark.parametrize(
    ("name", "old", "new", "line"),
    [
        pytest.param(P1, "Date: Fri, 1 Mar 2024", "Date: Fri, 01 Mar 2024", 3, id="date"),
        pytest.param(P1, "Because.\n", "Because.  \n", 6, id="trailing-whitespace"),
        pytest.param(P1, "Because.\n", "Because.\n\n\n", 8, id="extra-blank-lines"),
        pytest.param(P2, " 1 file changed", " 1 files changed", 11, id="diffstat"),
        pytest.param(
            P2,
            "-VALUE_20 = 20  # args line 20\n",
            "-VALUE_20 = 20  # args line 20\n+# by hand\n",
            10,
            id="diffstat-stale",
        ),
    ],
)
def test_check_hand_edited_patch_differs_from_re_export(exported, capsys, name, old, new, line: int):
    ws = exported
    if name == P2 and "by hand" in new:  # a consistent hunk, so only the stale diffstat gives it away
        edit(ws, P2, "@@ -19,7 +19,7 @@", "@@ -19,7 +19,8 @@")
    edit(ws, name, old, new)
    assert check_problems(ws, capsys, "1.0") == [
        f"{SERIES_DIR}/{name}:{line}: differs from its re-export; run `vpatch apply 1.0` then `vpatch export 1.0`"
    ]


def test_check_reports_every_problem(exported, capsys):
    ws = exported
    directory = ws.series_dir("1.0")
    (directory / "0003-stray.patch").write_bytes((directory / P1).read_bytes())
    edit(ws, P1, "Feature: kv-routing", "Feature: warp-drive")
    edit(ws, P1, "Date: Fri, 1 Mar 2024", "Date: Fri, 01 Mar 2024")
    edit(ws, P2, "Submitted [https://github.com/vllm-project/vllm/pull/1]", "Submitted")
    edit(ws, P2, " VALUE_18 = 18  # args line 18", " VALUE_18 = 81  # args line 18")
    assert check_problems(ws, capsys, "1.0") == [
        f"{SERIES_DIR}/0003-stray.patch: patch file is not listed in series",
        f"{SERIES_DIR}/{P1}:9: unknown feature 'warp-drive' (declared in pins.toml [features]: kv-routing, pd-disagg)",
        f"{SERIES_DIR}/{P2}:6: Upstream-Status Submitted needs a bracketed detail: Submitted [url]",
        f"{SERIES_DIR}/{P2}: does not apply with zero fuzz: vllm/engine/args.py: hunk #1 at line 19 does not apply",
    ]


def test_check_reports_every_problem_of_a_series_that_does_not_load(exported, capsys):
    ws = exported
    series_file(ws).write_text(f"# test series\n\n{P1}\n{P2}\n0003-missing.patch\n{P2}\n0004 -p2\n")
    edit(ws, P1, "From 0000000000000000000000000000000000000000", "Hello 0000000000000000000000000000000000000000")
    edit(ws, P2, "Feature: pd-disagg", "Feature: warp-drive")
    assert check_problems(ws, capsys, "1.0") == [
        f"{SERIES_DIR}/series:6: {P2} is listed twice (first on line 4)",
        f"{SERIES_DIR}/series:7: unsupported series options '-p2' (only -p1)",
        f"{SERIES_DIR}/{P1}:1: not a git format-patch mail (first line must be 'From <sha> ...')",
        f"{SERIES_DIR}/{P2}:7: unknown feature 'warp-drive' (declared in pins.toml [features]: kv-routing, pd-disagg)",
        f"{SERIES_DIR}/series:5: series lists 0003-missing.patch but the file does not exist",
        f"{SERIES_DIR}/series:7: series lists 0004 but the file does not exist",
    ]


# ---------------------------------------------------------------- JSON output


def test_status_json(exported, capsys):
    code, out, _ = run(exported, capsys, "status", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["project"] == "vllm"
    assert set(data["features"]) == {"kv-routing", "pd-disagg"}
    (version,) = data["versions"]
    assert {k: version[k] for k in ("version", "source")} == {"version": "1.0", "source": "sdist"}
    assert Path(version["series"]) == exported.series_dir("1.0")
    assert len(version["fingerprint"]) == 12 and "error" not in version
    assert version["patches"] == [
        {
            "name": P1,
            "subject": "[Core] bigger value",
            "feature": "kv-routing",
            "parent_feature": "kv-routing",
            "upstream_status": "Pending",
            "files": ["vllm/core/scheduler.py"],
        },
        {
            "name": P2,
            "subject": "[Engine] smaller value",
            "feature": "pd-disagg",
            "parent_feature": "pd-disagg",
            "upstream_status": "Submitted [https://github.com/vllm-project/vllm/pull/1]",
            "files": ["vllm/engine/args.py"],
        },
    ]


def test_status_json_invalid_upstream_status(exported, capsys):
    edit(exported, P1, "Upstream-Status: Pending", "Upstream-Status: Maybe")
    code, out, _ = run(exported, capsys, "status", "1.0", "--json")
    assert code == 0
    status = json.loads(out)["versions"][0]["patches"][0]["upstream_status"]
    assert status.startswith("invalid: unknown Upstream-Status 'Maybe'")


def test_check_json_ok(exported, capsys):
    code, out, err = run(exported, capsys, "check", "--json")
    assert (code, err) == (0, "")
    data = json.loads(out)
    assert data["ok"] is True and data["problems"] == []
    (version,) = data["versions"]
    assert {k: version[k] for k in ("version", "patches", "series", "problems")} == {
        "version": "1.0",
        "patches": 2,
        "series": True,
        "problems": 0,
    }
    assert isinstance(version["apply_seconds"], float)


def test_check_json_problems(exported, capsys):
    ws = exported
    edit(ws, P1, "Feature: kv-routing", "Feature: warp-drive")
    edit(ws, P2, "Date: Fri, 1 Mar 2024", "Date: Fri, 01 Mar 2024")
    before = ws.snapshot()
    code, out, err = run(ws, capsys, "check", "1.0", "--json")
    assert (code, err) == (1, "")
    assert ws.snapshot() == before
    data = json.loads(out)
    assert data["ok"] is False
    assert data["versions"][0]["problems"] == 2
    assert data["problems"] == [
        {
            "path": f"{SERIES_DIR}/{P1}",
            "line": 9,
            "message": "unknown feature 'warp-drive' (declared in pins.toml [features]: kv-routing, pd-disagg)",
        },
        {
            "path": f"{SERIES_DIR}/{P2}",
            "line": 3,
            "message": "differs from its re-export; run `vpatch apply 1.0` then `vpatch export 1.0`",
        },
    ]


def test_check_json_series_that_does_not_load(exported, capsys):
    edit(exported, P2, "Date: Fri", "Date Fri")
    code, out, err = run(exported, capsys, "check", "--json")
    assert (code, err) == (1, "")
    data = json.loads(out)
    assert data["problems"] == [
        {
            "path": f"{SERIES_DIR}/{P2}",
            "line": 3,
            "message": "malformed mail header line 'Date Fri, 1 Mar 2024 12:00:00 +0000'",
        }
    ]
    assert data["versions"][0]["patches"] == 1


# ---------------------------------------------------------------- export refuses without writing


def test_export_bad_patch_file_header(exported, capsys):
    ws = exported
    checkout = with_checkout(ws)
    commit_in(
        checkout,
        {"vllm/core/block_pool.py": "X = 1\n"},
        subject="[Core] escape",
        headers="Upstream-Status: Pending\nFeature: kv-routing\nPatch-File: ../escape.patch",
    )
    message = fails(ws, capsys, "export", "1.0")
    assert message.endswith("([Core] escape): bad Patch-File header '../escape.patch'")
    assert not (ws.patches / "escape.patch").exists()


def test_export_two_commits_claim_one_file(exported, capsys):
    ws = exported
    commit_in(
        with_checkout(ws),
        {"vllm/core/block_pool.py": "X = 1\n"},
        subject="[Core] copycat",
        headers=f"Upstream-Status: Pending\nFeature: kv-routing\nPatch-File: {P1}",
    )
    assert fails(ws, capsys, "export", "1.0") == f"two commits claim Patch-File {P1}; reword one of them"


def test_export_uncommitted_changes(exported, capsys):
    ws = exported
    (with_checkout(ws) / "vllm/core/block_pool.py").write_text("dirty\n")
    message = fails(ws, capsys, "export", "1.0")
    assert message.endswith("has uncommitted changes to tracked files; commit them (or stash) first")


# ---------------------------------------------------------------- places vpatch cannot write to or run


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An empty directory nothing can be written into, and the reason vpatch gives: a read-only tmpfs as
    root (root writes through any mode), mode 0555 otherwise."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        yield path, "permission denied"
        path.chmod(0o755)
        return
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a read-only tmpfs: {mounted.stderr.decode().strip()}")
    try:
        yield path, "read-only file system"
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_build_into_a_read_only_dir(exported, capsys, read_only_dir):
    path, reason = read_only_dir
    assert fails(exported, capsys, "build", "1.0", "-o", str(path), "--no-verify") == (
        f"read-only: output directory is not writable: {reason}"
    )
    assert fails(exported, capsys, "build", "1.0", "-o", str(path / "dist"), "--no-verify") == (
        f"read-only/dist: output directory is not writable: {reason} (cannot create it in read-only)"
    )
    assert list(path.iterdir()) == []


def test_apply_into_a_read_only_dir(exported, capsys, read_only_dir):
    path, reason = read_only_dir
    assert fails(exported, capsys, "apply", "1.0", "--into", str(path)) == (
        f"read-only: checkout directory is not writable: {reason}"
    )
    assert fails(exported, capsys, "apply", "1.0", "--into", str(path / "co")) == (
        f"read-only/co: checkout directory is not writable: {reason} (cannot create it in read-only)"
    )
    assert list(path.iterdir()) == []


@pytest.mark.parametrize("flags", [(), ("--force",), ("--abort",), ("--continue",)])
def test_apply_into_a_file(exported, capsys, tmp_path: Path, flags: tuple[str, ...]):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    message = fails(exported, capsys, "apply", "1.0", "--into", str(notes), *flags)
    assert message == "notes.txt: --into must name a checkout directory, and this is a file"
    assert notes.read_text() == "my notes\n"


def test_doctor_python_that_is_no_interpreter(exported, capsys, tmp_path: Path):
    assert fails(exported, capsys, "doctor", "--python", str(tmp_path)) == (
        ".: --python names a directory, not an interpreter (for a venv: DIR/bin/python)"
    )
    script = tmp_path / "python"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    assert fails(exported, capsys, "doctor", "--python", str(script)) == (
        "python: --python names a file that is not executable"
    )
    assert fails(exported, capsys, "doctor", "--python", str(tmp_path / "nowhere")) == (
        "nowhere: no interpreter here (the path does not exist)"
    )


def big_change(ws: Workspace) -> None:
    """A commit whose patch (~190 KB) does not fit where the export is to write it."""
    table = "".join(f"ENTRY_{i} = {i * 7919 % 100003}  # a generated table row\n" for i in range(4000))
    commit_in(with_checkout(ws), {"vllm/core/table.py": table}, subject="[Core] a big generated table")


def tree_listing(directory: Path) -> dict[str, bytes | None]:
    """Every file and directory (hidden ones included: a leftover staging directory counts)."""
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None for p in directory.rglob("*")}


def test_export_onto_a_full_disk(exported, capsys, tmp_path: Path):
    """ENOSPC for real: patches/ on a 64 KB tmpfs that the new patch does not fit in."""
    ws = exported
    big_change(ws)
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], capture_output=True)
    if mounted.returncode:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr.decode().strip()}")
    try:
        shutil.copytree(ws.patches, small / "patches")
        before = tree_listing(small / "patches")
        code, _out, err = run(ws, capsys, "--patches-dir", str(small / "patches"), "export", "1.0")
        assert code == 1
        assert error_line(err) == (
            "small/patches: cannot write the export of vllm-1.0 (No space left on device); nothing was changed"
        )
        assert tree_listing(small / "patches") == before
    finally:
        subprocess.run(["umount", str(small)], check=True)


def test_export_past_the_file_size_limit(exported, tmp_path: Path):
    """The same write failure without root: RLIMIT_FSIZE makes the kernel refuse the big patch (EFBIG)."""
    ws = exported
    big_change(ws)
    before = tree_listing(ws.patches)

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    vpatch = Path(sys.executable).with_name("vpatch")
    command = [str(vpatch), "--root", str(ws.root), "--cache-dir", str(ws.cache), "--index-url", ws.index.url]
    proc = subprocess.run(
        [*command, "export", "1.0"], capture_output=True, text=True, cwd=tmp_path, preexec_fn=limit_file_size
    )
    assert proc.returncode == 1
    assert error_line(proc.stderr) == (
        "project/patches: cannot write the export of vllm-1.0 (File too large); nothing was changed"
    )
    assert tree_listing(ws.patches) == before


@pytest.mark.parametrize(
    ("name", "old", "line", "message"),
    [
        pytest.param(P1, "Feature: kv-routing\n", 9, "required header Feature: is missing", id="feature"),
        pytest.param(
            P2,
            "Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]\n",
            7,
            "required header Upstream-Status: is missing",
            id="upstream-status",
        ),
    ],
)
def test_build_refuses_a_series_without_the_required_headers(
    exported, capsys, tmp_path: Path, name: str, old: str, line: int, message: str
):
    ws = exported
    edit(ws, name, old, "")
    expected = f"{SERIES_DIR}/{name}:{line}: {message}"
    assert check_problems(ws, capsys, "1.0") == [expected]  # the same line `check` prints
    assert fails(ws, capsys, "build", "1.0", "-o", str(tmp_path / "dist"), "--no-verify") == expected
    assert not (tmp_path / "dist").exists()
