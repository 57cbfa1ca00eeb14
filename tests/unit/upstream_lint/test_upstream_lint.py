"""`vpatch check --lint` on synthetic upstreams that carry their own lint configuration.

The upstream's `.pre-commit-config.yaml` pins real ruff and yapf releases (installed from PyPI into the
cache's tool venvs, shared by this module's tests); its pyproject's [tool.ruff] sets the line length.
"""

from __future__ import annotations

import json

import pytest

from tests.harness import Workspace, commit_in, default_tree, module_text
from toolkit.errors import VpatchError
from toolkit.upstream_lint.config import load_lint_config

PRE_COMMIT = """\
default_stages:
  - pre-commit
  - manual
exclude: 'vllm/third_party/.*'
repos:
- repo: https://github.com/google/yapf
  rev: v0.43.0
  hooks:
  - id: yapf
    args: [--in-place, --verbose]
- repo: https://github.com/astral-sh/ruff-pre-commit
  rev: v0.9.3
  hooks:
  - id: ruff
    args: [--output-format, github, --fix]
- repo: https://github.com/PyCQA/isort
  rev: 0a0b7a830386ba6a31c2ec8316849ae4d1b8240d # 6.0.0
  hooks:
  - id: isort
- repo: https://github.com/pre-commit/mirrors-clang-format
  rev: v19.1.7
  hooks:
  - id: clang-format
- repo: local
  hooks:
  - id: mypy-local
    name: mypy
    entry: tools/mypy.sh
    language: python
    stages: [pre-commit]
"""
PYPROJECT = """\
[project]
name = "vllm"

[tool.ruff]
line-length = 80

[tool.ruff.lint]
select = ["E", "F"]
"""
LONG_LINE = "LONG_NAME = " + repr("x" * 80)  # 94 characters: E501 at line-length 80


def upstream_tree(version: str, *, config: bool = True) -> dict[str, str | bytes]:
    tree = default_tree(version)
    # Upstream's own long line: a finding of upstream's, which must not be blamed on a patch.
    tree["vllm/core/scheduler.py"] = module_text("scheduler") + LONG_LINE + "\n"
    if config:
        tree[".pre-commit-config.yaml"] = PRE_COMMIT
        tree["pyproject.toml"] = PYPROJECT
    return tree


def pin_with_series(ws: Workspace, version: str, tree: dict, commits: list[tuple[str, dict[str, str]]]) -> None:
    ws.publish(version, tree)
    assert ws.run("pin", "add", version) == 0
    ws.write_series(version, {})
    assert ws.run("apply", version) == 0
    for subject, changes in commits:
        commit_in(ws.checkout(version), changes, subject=subject)
    assert ws.run("export", version) == 0


def check_json(ws: Workspace, capsys: pytest.CaptureFixture[str], version: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = ws.run("check", version, "--no-wheels", "--lint", "--json")
    return code, json.loads(capsys.readouterr().out)


def scheduler_with(*lines: str) -> str:
    return module_text("scheduler") + LONG_LINE + "\n" + "".join(line + "\n" for line in lines)


def test_findings_are_attributed_to_the_patch_and_line_that_wrote_them(lint_ws, capsys):
    base_lines = len(scheduler_with().splitlines())  # the patches append below upstream's lines
    pin_with_series(
        lint_ws,
        "1.0",
        upstream_tree("1.0"),
        [
            ("[Core] a clean addition", {"vllm/core/scheduler.py": scheduler_with("CLEAN = 1")}),
            (
                "[Core] an addition that breaks the release's linters",
                {
                    "vllm/core/scheduler.py": scheduler_with("CLEAN = 1", "SPACED = [1,2 ,3]", LONG_LINE),
                    "vllm/core/kv_events.py": '"""Events."""\nimport os\n',
                },
            ),
        ],
    )
    code, data = check_json(lint_ws, capsys, "1.0")
    assert code == 1
    (facts,) = data["versions"]
    lint = facts["lint"]
    assert lint["configured"] and lint["tools"] == ["yapf 0.43.0", "ruff 0.9.3", "isort 6.0.0"]
    assert {s["hook"] for s in lint["skipped"]} == {"clang-format"}  # mypy-local is not a CI-stage hook
    found = {(f["patch"], f["path"], f["line"], f["tool"], f["code"]) for f in lint["findings"]}
    second = sorted(p.name for p in lint_ws.series_dir("1.0").glob("0002-*.patch"))[0]
    assert found == {
        (second, "vllm/core/scheduler.py", base_lines + 2, "yapf 0.43.0", "format"),
        (second, "vllm/core/scheduler.py", base_lines + 3, "ruff 0.9.3", "E501"),
        (second, "vllm/core/kv_events.py", 2, "ruff 0.9.3", "F401"),
    }
    assert lint["upstream_findings"] == 1  # upstream's own long line, counted and not reported
    rendered = {p["message"] for p in data["problems"]}
    assert f"vllm/core/scheduler.py:{base_lines + 3}: ruff 0.9.3: E501 Line too long (94 > 80)" in rendered
    assert all(p["path"].endswith(second) for p in data["problems"])
    # Again: every report comes from the result cache (no tool runs), attributed the same.
    code, again = check_json(lint_ws, capsys, "1.0")
    assert code == 1 and again["versions"][0]["lint"]["linted"] == 0 and again["problems"] == data["problems"]


def test_clean_series_passes_and_says_what_ran(lint_ws, capsys):
    pin_with_series(
        lint_ws,
        "1.1",
        upstream_tree("1.1"),
        [("[Core] a clean addition", {"vllm/core/scheduler.py": scheduler_with("CLEAN = [1, 2, 3]")})],
    )
    code, data = check_json(lint_ws, capsys, "1.1")
    assert code == 0, data["problems"]
    lint = data["versions"][0]["lint"]
    assert lint["findings"] == [] and lint["files"] == 1 and lint["upstream_findings"] == 1
    assert lint["linted"] == 3  # yapf, ruff and isort each ran on the file
    # A damaged cache entry is not trusted: the tool runs again.
    for entry in (lint_ws.cache / "lint-results").rglob("*.json"):
        entry.write_text("{not json")
    capsys.readouterr()
    assert lint_ws.run("check", "1.1", "--no-wheels", "--lint") == 0
    err = capsys.readouterr().err
    assert "lint: 0 finding(s) in 1 file(s), 1 on upstream lines not reported" in err
    assert "yapf 0.43.0, ruff 0.9.3, isort 6.0.0; not run: clang-format" in err


def test_a_source_without_lint_configuration_says_so(lint_ws, capsys):
    pin_with_series(
        lint_ws,
        "1.2",
        upstream_tree("1.2", config=False),
        [("[Core] anything", {"vllm/core/scheduler.py": scheduler_with(LONG_LINE)})],
    )
    capsys.readouterr()
    assert lint_ws.run("check", "1.2", "--no-wheels", "--lint") == 0
    assert "lint: the pinned source has no .pre-commit-config.yaml; nothing to lint with" in capsys.readouterr().err


def test_config_maps_revs_to_releases_and_keeps_only_ci_hooks(tmp_path):
    (tmp_path / ".pre-commit-config.yaml").write_text(PRE_COMMIT)
    config = load_lint_config(tmp_path)
    assert config is not None
    assert [(h.id, h.requirements, h.args) for h in config.hooks] == [
        ("yapf", ("yapf==0.43.0",), ()),  # --in-place and --verbose dropped: vpatch asks for a diff
        ("ruff", ("ruff==0.9.3",), ()),
        ("isort", ("isort==6.0.0",), ()),  # the commit id's `# 6.0.0` comment
    ]
    assert config.hooks_for("vllm/third_party/x.py", frozenset({"python", "text"})) == []
    assert [h.id for h in config.hooks_for("vllm/x.py", frozenset({"python", "text"}))] == ["yapf", "ruff", "isort"]
    assert config.hooks_for("README.md", frozenset({"text"})) == []
    assert load_lint_config(tmp_path / "missing") is None


def test_a_broken_config_is_one_line_naming_file_and_line(tmp_path):
    (tmp_path / ".pre-commit-config.yaml").write_text("repos:\n- repo: local\n  hooks: [\n")
    with pytest.raises(VpatchError) as caught:
        load_lint_config(tmp_path)
    assert caught.value.path == tmp_path / ".pre-commit-config.yaml" and caught.value.line is not None
    (tmp_path / ".pre-commit-config.yaml").write_text("- just a list\n")
    with pytest.raises(VpatchError, match="a pre-commit configuration"):
        load_lint_config(tmp_path)


MYPY_CONFIG = """\
repos:
- repo: local
  hooks:
  - id: mypy-3.12
    name: Run mypy for Python 3.12
    entry: tools/mypy.sh 1 "3.12"
    language: python
    types: [python]
    additional_dependencies: [mypy==1.11.1]
    stages: [manual]
"""
MYPY_SH = '#!/bin/bash\nrun_mypy() { mypy --follow-imports skip "$@"; }\nrun_mypy vllm/core\nrun_mypy vllm/engine\n'


def test_mypy_runs_per_directory_as_the_release_script_does(lint_ws, capsys):
    tree = upstream_tree("1.3")
    tree.update({".pre-commit-config.yaml": MYPY_CONFIG, "tools/mypy.sh": MYPY_SH})
    pin_with_series(
        lint_ws,
        "1.3",
        tree,
        [("[Core] a wrong annotation", {"vllm/core/scheduler.py": scheduler_with('WRONG: int = "text"')})],
    )
    code, data = check_json(lint_ws, capsys, "1.3")
    assert code == 1
    lint = data["versions"][0]["lint"]
    assert lint["tools"] == ["mypy 1.11.1 (py3.12)"]
    assert [(f["line"], f["code"]) for f in lint["findings"]] == [
        (len(scheduler_with().splitlines()) + 1, "assignment")
    ]
