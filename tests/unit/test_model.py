"""Unit tests of the parsers in toolkit.model (patch mails, series files, Upstream-Status) and of header lint."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version

from toolkit.errors import VpatchError
from toolkit.lint import first_difference, lint_headers, lint_series_dir
from toolkit.model import (
    UpstreamStatus,
    check_tree_path,
    load_series,
    parse_patch,
    parse_series_file,
    parse_version,
)

NAME = "0001-core-bigger-value.patch"
FEATURES = {"kv-routing": "KV routing", "pd-disagg": "P/D disaggregation"}

# Line numbers below refer to this mail: 1 mbox From, 2 From:, 3 Date:, 4 Subject:, 6 body,
# 8-10 the DEP-3 headers, 11 `---`, 15 the first `diff --git`, 29 the second.
GOOD = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
From: Upstream Dev <dev@upstream.example>
Date: Fri, 1 Mar 2024 12:00:00 +0000
Subject: [PATCH] [Core] bigger value

Because.

Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]
Feature: kv-routing
Patch-File: 0001-core-bigger-value.patch
---
 vllm/core/scheduler.py | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/vllm/core/scheduler.py b/vllm/core/scheduler.py
index 5272825d9b39fccc0e8b43ba7b666db956459cea..59cbc569dd7c7f70ef852a7fb059b051a2129f79 100644
--- a/vllm/core/scheduler.py
+++ b/vllm/core/scheduler.py
@@ -9,3 +9,3 @@ VALUE_6 = 6  # scheduler line 6
 VALUE_7 = 7  # scheduler line 7
-VALUE_8 = 8  # scheduler line 8
+VALUE_8 = 800  # scheduler line 8
 VALUE_9 = 9  # scheduler line 9
@@ -30,3 +30,3 @@ VALUE_27 = 27  # scheduler line 27
 VALUE_28 = 28  # scheduler line 28
-VALUE_29 = 29  # scheduler line 29
+VALUE_29 = 290  # scheduler line 29
 VALUE_30 = 30  # scheduler line 30
diff --git a/vllm/new.py b/vllm/new.py
new file mode 100644
index 0000000000000000000000000000000000000000..9b26e9b102ec6ee95cfac08a4a40e2ff0bd2cab2
--- /dev/null
+++ b/vllm/new.py
@@ -0,0 +1 @@
+X = 1
"""


def parse(text: str | bytes, name: str = NAME):
    data = text.encode() if isinstance(text, str) else text
    return parse_patch(Path(name), data)


def replaced(old: str, new: str, text: str = GOOD) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new)


def parse_error(text: str | bytes) -> VpatchError:
    with pytest.raises(VpatchError) as info:
        parse(text)
    error = info.value
    assert error.path == Path(NAME)
    assert "\n" not in error.render()
    return error


# ---------------------------------------------------------------- well-formed mails


def test_parse_good_mail():
    patch = parse(GOOD)
    assert patch.name == NAME
    assert patch.author == "Upstream Dev <dev@upstream.example>"
    assert patch.date == "Fri, 1 Mar 2024 12:00:00 +0000"
    assert patch.subject == "[Core] bigger value"
    assert patch.message.startswith("Because.\n\nUpstream-Status:")
    assert patch.headers == (
        ("Upstream-Status", "Submitted [https://github.com/vllm-project/vllm/pull/1]", 8),
        ("Feature", "kv-routing", 9),
        ("Patch-File", NAME, 10),
    )
    assert patch.upstream_status == UpstreamStatus("Submitted", "https://github.com/vllm-project/vllm/pull/1")
    assert patch.feature == "kv-routing"
    assert patch.header("patch-file") == NAME and patch.header_line("FEATURE") == 9
    assert patch.header("Origin") is None and patch.header_line("Origin") is None
    first, second = patch.files
    assert (first.old_path, first.new_path, first.hunks, first.line) == (
        "vllm/core/scheduler.py",
        "vllm/core/scheduler.py",
        2,
        15,
    )
    assert first.hunk_starts == (9, 30)
    assert (second.old_path, second.new_path, second.hunks, second.line) == (None, "vllm/new.py", 1, 29)
    assert patch.touched_paths == ("vllm/core/scheduler.py", "vllm/new.py")
    assert len(patch.sha256) == 64 and patch.sha256 != parse(GOOD + "\n").sha256


def test_parse_reads_the_file(tmp_path: Path):
    path = tmp_path / NAME
    path.write_text(GOOD)
    assert parse_patch(path).subject == "[Core] bigger value"
    with pytest.raises(VpatchError, match="patch file does not exist") as info:
        parse_patch(tmp_path / "0002-missing.patch")
    assert info.value.path == tmp_path / "0002-missing.patch"


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Subject: [PATCH v2 3/7] [Core] bigger value", "[Core] bigger value"),
        ("Subject: [PATCH] =?UTF-8?q?[Core]=20caf=C3=A9=20value?=", "[Core] café value"),
        (
            "Subject: [PATCH] [Core] a subject that is long\n enough to be folded",
            "[Core] a subject that is long enough to be folded",
        ),
    ],
)
def test_subject_decoding(subject: str, expected: str):
    assert parse(replaced("Subject: [PATCH] [Core] bigger value", subject)).subject == expected


def test_deleted_and_renamed_files():
    text = GOOD.split("diff --git a/vllm/new.py")[0] + (
        "diff --git a/vllm/old.py b/vllm/old.py\n"
        "deleted file mode 100644\n"
        "index 9b26e9b102ec6ee95cfac08a4a40e2ff0bd2cab2..0000000000000000000000000000000000000000\n"
        "--- a/vllm/old.py\n"
        "+++ /dev/null\n"
        "@@ -1 +0,0 @@\n"
        "-X = 1\n"
        "diff --git a/vllm/a.py b/vllm/b.py\n"
        "similarity index 100%\n"
        "rename from vllm/a.py\n"
        "rename to vllm/b.py\n"
    )
    deleted, renamed = parse(text).files[1:]
    assert (deleted.old_path, deleted.new_path, deleted.path) == ("vllm/old.py", None, "vllm/old.py")
    assert (renamed.old_path, renamed.new_path, renamed.hunks) == ("vllm/a.py", "vllm/b.py", 0)
    assert renamed.paths == ("vllm/a.py", "vllm/b.py")


def test_prose_last_paragraph_is_not_a_header_block():
    text = replaced(
        "Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]\nFeature: kv-routing\n"
        "Patch-File: 0001-core-bigger-value.patch\n",
        "This fixes the following:\nthe scheduler was too slow.\n",
    )
    patch = parse(text)
    assert patch.headers == ()
    with pytest.raises(ValueError, match="malformed Upstream-Status"):
        _ = patch.upstream_status


def test_folded_dep3_header():
    text = replaced("Feature: kv-routing\n", "Origin: https://example.com/a\n  continued\nFeature: kv-routing\n")
    patch = parse(text)
    assert patch.header("Origin") == "https://example.com/a continued"
    assert patch.header_line("Feature") == 11


# ---------------------------------------------------------------- malformed mails


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        pytest.param("", 1, "not a git format-patch mail", id="empty"),
        pytest.param(
            replaced("From 0000000000000000000000000000000000000000 ", "From: "), 1, "not a git", id="from-colon"
        ),
        pytest.param(
            replaced("From 0000000000000000000000000000000000000000 ", "From abc "), 1, "not a git", id="short-sha"
        ),
        pytest.param("\n" + GOOD, 1, "first line must be 'From <sha> ...'", id="leading-blank"),
        pytest.param(
            replaced("Date: Fri", "X-Note this has no colon\nDate: Fri"),
            3,
            "malformed mail header line 'X-Note this has no colon'",
            id="header-without-colon",
        ),
        pytest.param(
            replaced("Subject: [PATCH] [Core] bigger value\n", ""),
            1,
            "mail header 'Subject:' is missing",
            id="no-subject",
        ),
        pytest.param(
            replaced("From: Upstream Dev <dev@upstream.example>\n", ""),
            1,
            "mail header 'From:' is missing",
            id="no-from",
        ),
        pytest.param(replaced("Date: Fri, 1 Mar 2024 12:00:00 +0000\n", ""), 1, "'Date:' is missing", id="no-date"),
        pytest.param(
            replaced("Subject: [PATCH] [Core] bigger value", "Subject: [PATCH]"), 4, "empty Subject", id="empty-subj"
        ),
        pytest.param(GOOD.split("\n\n")[0], 4, "mail ends inside its header block", id="truncated-headers"),
        pytest.param(GOOD.split("diff --git")[0], 11, "patch contains no 'diff --git' section", id="no-diff"),
        pytest.param(
            replaced("diff --git a/vllm/new.py b/vllm/new.py", "diff --git a/vllm/new.py"),
            29,
            "malformed diff header 'diff --git a/vllm/new.py'",
            id="bad-diff-header",
        ),
        pytest.param(
            replaced("Upstream-Status: Submitted", "Upstream-Status:Submitted"),
            8,
            "malformed header line 'Upstream-Status:Submitted",
            id="dep3-header-without-space",
        ),
    ],
)
def test_malformed_mail(text: str, line: int, message: str):
    error = parse_error(text)
    assert error.line == line
    assert message in error.message


def test_crlf_converted_file_names_the_first_header_line():
    error = parse_error(GOOD.replace("\n", "\r\n"))
    assert error.line == 2
    assert error.message.startswith("CRLF line ending in the mail header")
    assert error.render() == f"{NAME}:2: {error.message}"


def test_crlf_in_dep3_headers_only():
    error = parse_error(replaced("Feature: kv-routing\n", "Feature: kv-routing\r\n"))
    assert (error.line, error.message) == (9, "CRLF line ending in the patch headers")


@pytest.mark.parametrize(("needle", "line"), [("Because.", 6), ("Feature: kv", 9), ("+X = 1", 35)])
def test_non_utf8_byte_names_its_line(needle: str, line: int):
    data = GOOD.encode().replace(needle.encode(), needle.encode() + b" \xff\xfe")
    error = parse_error(data)
    assert (error.line, error.message) == (line, "patch is not valid UTF-8")
    assert error.render() == f"{NAME}:{line}: patch is not valid UTF-8"


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("../x", "leaves the tree through '..'"),
        ("vllm/../../x", "leaves the tree through '..'"),
        ("/etc/passwd", "absolute path '/etc/passwd'"),
        (".git/config", "is inside .git"),
        (".git/hooks/post-checkout", "is inside .git"),
    ],
)
def test_path_outside_the_tree_in_diff_header(path: str, why: str):
    error = parse_error(GOOD.replace("vllm/new.py", path))
    assert error.line == 29
    assert error.message.startswith("patch touches a path outside the tree: ")
    assert why in error.message


def test_path_outside_the_tree_quoted_or_renamed():
    quoted = GOOD.replace("diff --git a/vllm/new.py b/vllm/new.py", 'diff --git "a/../x" "b/../x"')
    assert parse_error(quoted).line == 29
    renamed = GOOD.split("diff --git a/vllm/new.py")[0] + (
        "diff --git a/vllm/a.py b/vllm/b.py\nsimilarity index 100%\nrename from vllm/a.py\nrename to ../../b.py\n"
    )
    error = parse_error(renamed)
    assert (error.line, "leaves the tree" in error.message) == (32, True)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("vllm/core/scheduler.py", None),
        (".github/workflows/ci.yml", None),
        ("vllm/..foo", None),
        ("", "empty path"),
        ("a/../../b", "leaves the tree"),
        ("/abs", "absolute path"),
        (".git", "inside .git"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "NUL"),
    ],
)
def test_check_tree_path(path: str, problem: str | None):
    result = check_tree_path(path)
    assert result is None if problem is None else problem in result


# ---------------------------------------------------------------- upstream status


@pytest.mark.parametrize(
    ("text", "kind", "detail"),
    [
        ("Pending", "Pending", ""),
        ("  Pending  ", "Pending", ""),
        (
            "Submitted [https://github.com/vllm-project/vllm/pull/7]",
            "Submitted",
            "https://github.com/vllm-project/vllm/pull/7",
        ),
        (
            "Backport [https://github.com/vllm-project/vllm/commit/abc]",
            "Backport",
            "https://github.com/vllm-project/vllm/commit/abc",
        ),
        ("Accepted [0.9.0]", "Accepted", "0.9.0"),
        ("Inappropriate [dynamo specific]", "Inappropriate", "dynamo specific"),
        (
            "Denied [https://github.com/vllm-project/vllm/pull/8]",
            "Denied",
            "https://github.com/vllm-project/vllm/pull/8",
        ),
    ],
)
def test_upstream_status_valid(text: str, kind: str, detail: str):
    status = UpstreamStatus.parse(text)
    assert (status.kind, status.detail) == (kind, detail)
    assert UpstreamStatus.parse(str(status)) == status
    assert status.is_upstream == (kind == "Accepted")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Maybe", "unknown Upstream-Status 'Maybe'"),
        ("pending", "unknown Upstream-Status 'pending'"),
        ("Merged [abc]", "unknown Upstream-Status 'Merged'"),
        ("Submitted", "Upstream-Status Submitted needs a bracketed detail: Submitted [url]"),
        ("Submitted []", "Upstream-Status Submitted needs a bracketed detail: Submitted [url]"),
        ("Backport", "Backport needs a bracketed detail: Backport [url]"),
        ("Accepted", "Accepted needs a bracketed detail: Accepted [version|commit]"),
        ("Inappropriate [  ]", "Inappropriate needs a bracketed detail: Inappropriate [reason]"),
        ("Denied", "Denied needs a bracketed detail: Denied [url]"),
        ("Submitted [https://x", "malformed Upstream-Status 'Submitted [https://x'"),
        ("Submitted [url] and more", "malformed Upstream-Status"),
        ("Pending, maybe", "malformed Upstream-Status"),
        ("", "malformed Upstream-Status ''"),
    ],
)
def test_upstream_status_invalid(text: str, message: str):
    with pytest.raises(ValueError) as info:
        UpstreamStatus.parse(text)
    assert message in str(info.value)
    assert "Pending, Submitted [url], Backport [url]" in str(info.value) or "needs a bracketed detail" in message


# ---------------------------------------------------------------- header lint


def lint(text: str, name: str = NAME) -> list[str]:
    return [p.render() for p in lint_headers(parse(text, name), FEATURES)]


def test_lint_headers_clean():
    assert lint(GOOD) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]",
            "Upstream-Status: Sent [https://github.com/vllm-project/vllm/pull/1]",
            "8: unknown Upstream-Status 'Sent'",
            id="unknown-status",
        ),
        pytest.param(
            "Submitted [https://github.com/vllm-project/vllm/pull/1]",
            "Submitted",
            "8: Upstream-Status Submitted needs a bracketed detail: Submitted [url]",
            id="submitted-without-url",
        ),
        pytest.param(
            "Feature: kv-routing",
            "Feature: warp-drive",
            "9: unknown feature 'warp-drive' (declared in pins.toml [features]: kv-routing, pd-disagg)",
            id="unknown-feature",
        ),
        pytest.param("Feature: kv-routing\n", "", "9: required header Feature: is missing", id="no-feature"),
        pytest.param(
            "Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]\n",
            "",
            "9: required header Upstream-Status: is missing",
            id="no-status",
        ),
        pytest.param(
            "Feature: kv-routing\n",
            "Feature: kv-routing\nFeature: pd-disagg\n",
            "10: header Feature appears twice (first on line 9)",
            id="duplicate",
        ),
        pytest.param(
            "Feature: kv-routing\n",
            "Feature: kv-routing\nfeature: pd-disagg\n",
            "10: header feature appears twice (first on line 9)",
            id="duplicate-other-case",
        ),
        pytest.param(
            "Patch-File: 0001-core-bigger-value.patch",
            "Patch-File: 0001-core.patch",
            "10: Patch-File header says '0001-core.patch' but the file is '0001-core-bigger-value.patch'",
            id="patch-file-mismatch",
        ),
    ],
)
def test_lint_headers_problem(old: str, new: str, expected: str):
    (problem,) = lint(replaced(old, new))
    assert problem.startswith(f"{NAME}:{expected}")


def test_lint_headers_repeatable_headers_are_fine():
    text = replaced("Feature: kv-routing\n", "Feature: kv-routing\nSigned-off-by: A <a@x>\nSigned-off-by: B <b@x>\n")
    assert lint(text) == []


def test_lint_headers_reports_every_problem():
    text = replaced("Feature: kv-routing\n", "Feature: nope\nFeature: kv-routing\n")
    text = replaced("Submitted [https://github.com/vllm-project/vllm/pull/1]", "Maybe", text)
    assert lint(text) == [
        f"{NAME}:10: header Feature appears twice (first on line 9)",
        f"{NAME}:8: unknown Upstream-Status 'Maybe' (expected one of: Pending, Submitted [url], Backport [url], "
        "Accepted [version|commit], Inappropriate [reason], Denied [url])",
        f"{NAME}:9: unknown feature 'nope' (declared in pins.toml [features]: kv-routing, pd-disagg)",
    ]


def test_lint_headers_without_any_header_block():
    text = replaced(
        "Upstream-Status: Submitted [https://github.com/vllm-project/vllm/pull/1]\nFeature: kv-routing\n"
        "Patch-File: 0001-core-bigger-value.patch\n",
        "Just prose.\n",
    )
    assert lint(text) == [
        f"{NAME}: required header Upstream-Status: is missing",
        f"{NAME}: required header Feature: is missing",
    ]


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [(b"a\nb\nc\n", b"a\nb\nc\n", 5), (b"a\nb\nc\n", b"a\nB\nc\n", 2), (b"a\nb", b"a\nb\nc", 3), (b"x", b"y", 1)],
)
def test_first_difference(old: bytes, new: bytes, line: int):
    assert first_difference(old, new) == line


# ---------------------------------------------------------------- series files


def write_series(directory: Path, text: str, patches: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "series").write_text(text)
    for name, content in (patches or {}).items():
        (directory / name).write_text(content)
    return directory / "series"


def test_parse_series_file(tmp_path: Path):
    text = "# the series\n\n0001-a.patch\n  0002-b.patch -p1  # trailing comment\n#0003-c.patch\n"
    entries, raw = parse_series_file(write_series(tmp_path, text))
    assert [(e.name, e.line) for e in entries] == [("0001-a.patch", 3), ("0002-b.patch", 4)]
    assert raw == text


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("0001-a.patch\n0002-b.patch\n0001-a.patch\n", 3, "0001-a.patch is listed twice (first on line 1)"),
        ("0001-a.patch -p0\n", 1, "unsupported series options '-p0' (only -p1)"),
        ("# c\n../0001-a.patch\n", 2, "series entry '../0001-a.patch' must be a file name in this directory"),
        ("sub/0001-a.patch\n", 1, "must be a file name in this directory"),
        ("..\n", 1, "series entry '..' must be a file name"),
        ("0001-a.patch\r\n", 1, "CRLF line ending in series file"),
    ],
)
def test_parse_series_file_errors(tmp_path: Path, text: str, line: int, message: str):
    series = write_series(tmp_path, text)
    with pytest.raises(VpatchError) as info:
        parse_series_file(series)
    assert (info.value.path, info.value.line) == (series, line)
    assert message in info.value.message


def test_parse_series_file_can_collect_every_problem(tmp_path: Path):
    text = "0001-a.patch -p0\n../x.patch\n0002-b.patch\n0001-a.patch\n0002-b.patch -p1\n"
    errors: list[VpatchError] = []
    entries, _ = parse_series_file(write_series(tmp_path, text), errors)
    assert [(e.name, e.line) for e in entries] == [("0001-a.patch", 1), ("0002-b.patch", 3)]
    assert [(e.line, e.message) for e in errors] == [
        (1, "unsupported series options '-p0' (only -p1)"),
        (2, "series entry '../x.patch' must be a file name in this directory"),
        (4, "0001-a.patch is listed twice (first on line 1)"),
        (5, "0002-b.patch is listed twice (first on line 3)"),
    ]


def test_parse_series_file_unreadable(tmp_path: Path):
    with pytest.raises(VpatchError, match="series file does not exist"):
        parse_series_file(tmp_path / "series")
    series = tmp_path / "series"
    series.write_bytes(b"0001-a.patch\n0002-\xe9.patch\n")
    with pytest.raises(VpatchError) as info:
        parse_series_file(series)
    assert (info.value.line, info.value.message) == (2, "series file is not valid UTF-8")


def test_load_series(tmp_path: Path):
    second = replaced("Patch-File: 0001-core-bigger-value.patch", "Patch-File: 0002-b.patch")
    write_series(tmp_path, f"# c\n{NAME}\n0002-b.patch\n", {NAME: GOOD, "0002-b.patch": second})
    series = load_series(tmp_path, Version("1.0"))
    assert [p.name for p in series.patches] == [NAME, "0002-b.patch"]
    assert [e.line for e in series.entries] == [2, 3]
    assert series.by_name("0002-b.patch").header("Patch-File") == "0002-b.patch"
    assert len(series.fingerprint()) == 12
    with pytest.raises(VpatchError, match="no patch named 'nope'"):
        series.by_name("nope")


def test_load_series_missing_file(tmp_path: Path):
    series = write_series(tmp_path, f"{NAME}\n0002-gone.patch\n", {NAME: GOOD})
    with pytest.raises(VpatchError) as info:
        load_series(tmp_path, Version("1.0"))
    assert (info.value.path, info.value.line) == (series, 2)
    assert info.value.message == "series lists 0002-gone.patch but the file does not exist"


def test_load_series_bad_patch_names_the_patch(tmp_path: Path):
    write_series(tmp_path, f"{NAME}\n", {NAME: GOOD.replace("Date: Fri", "Date Fri")})
    with pytest.raises(VpatchError) as info:
        load_series(tmp_path, Version("1.0"))
    assert (info.value.path, info.value.line) == (tmp_path / NAME, 3)


def test_lint_series_dir_reports_every_problem(tmp_path: Path):
    other = replaced("Patch-File: 0001-core-bigger-value.patch", "Patch-File: 0002-same-subject.patch")
    write_series(
        tmp_path,
        f"# c\n{NAME}\n0002-same-subject.patch -p0\n0003-broken.patch\n0004-gone.patch\n{NAME}\n",
        {
            NAME: GOOD,
            "0002-same-subject.patch": other.replace("Feature: kv-routing", "Feature: nope"),
            "0003-broken.patch": GOOD.replace("From 0000", "Hello 0000"),
            "0009-unlisted.patch": GOOD,
        },
    )
    problems, patches = lint_series_dir(tmp_path, None, FEATURES)  # type: ignore[arg-type]
    series = tmp_path / "series"
    assert [(p.path, p.line, p.message.split(" (")[0]) for p in problems] == [
        (series, 3, "unsupported series options '-p0'"),
        (series, 6, f"{NAME} is listed twice"),
        (tmp_path / "0009-unlisted.patch", None, "patch file is not listed in series"),
        (tmp_path / "0002-same-subject.patch", 9, "unknown feature 'nope'"),
        (tmp_path / "0002-same-subject.patch", None, "subject '[Core] bigger value' is also used by " + NAME),
        (tmp_path / "0003-broken.patch", 1, "not a git format-patch mail"),
        (series, 5, "series lists 0004-gone.patch but the file does not exist"),
    ]
    assert [p.name for p in patches] == [NAME, "0002-same-subject.patch"]


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize("text", ["0.9.0", "1.0", "0.10.1.post1", "1.0rc2"])
def test_parse_version(text: str):
    assert parse_version(text) == Version(text)


@pytest.mark.parametrize("text", ["", "x.y", "1.0 beta", "v1..0", "1.0/../2"])
def test_parse_version_invalid(text: str):
    with pytest.raises(VpatchError) as info:
        parse_version(text, path=Path("pins.toml"), line=4)
    assert info.value.render() == f"pins.toml:4: invalid version {text!r}"
