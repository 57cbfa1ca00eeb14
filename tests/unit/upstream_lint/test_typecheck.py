"""`vpatch check --lint`'s mypy hooks, run by a real mypy on synthetic upstreams, as each release's CI runs them.

Each upstream carries its own mypy setup: a `.pre-commit-config.yaml` whose CI hook pins mypy, its
pyproject's `[tool.mypy]`, and the script the hook runs (`tools/pre_commit/mypy.py` with its file groups, or
`tools/mypy.sh` with its first run and `run_mypy DIR` lines). Type errors are planted in lines a patch wrote
and in lines upstream wrote; only the first are the patch's.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.harness import Workspace, commit_in, default_tree
from toolkit.upstream_lint.config import load_lint_config

MYPY_PY_CONFIG = """\
repos:
- repo: local
  hooks:
  - id: mypy-local
    entry: python tools/pre_commit/mypy.py 0 "3.10"
    stages: [pre-commit]
    <<: &mypy_common
      language: python
      types_or: [python, pyi]
      require_serial: true
      additional_dependencies: [mypy==1.11.1]
  - id: mypy-3.10
    entry: python tools/pre_commit/mypy.py 1 "3.10"
    <<: *mypy_common
    stages: [manual]
"""
# The release's script, as vLLM's is shaped: changed files in, grouped, one mypy run per group; the main
# group follows imports as the config says (silently), the separate groups skip them.
MYPY_PY = """\
import re
import subprocess
import sys

FILES = ["vllm/core"]
SEPARATE_GROUPS = ["vllm/engine"]
EXCLUDE = ["vllm/core/ops"]


def group_files(changed_files):
    groups = {"": []}
    groups.update({name: [] for name in SEPARATE_GROUPS})
    for name in changed_files:
        if re.match("^(" + "|".join(EXCLUDE) + ")", name):
            continue
        if re.match("^(" + "|".join(FILES) + ")", name):
            groups[""].append(name)
            continue
        for directory in SEPARATE_GROUPS:
            if name.startswith(directory):
                groups[directory].append(name)
                break
    return groups


def main():
    ci, python_version = sys.argv[1] == "1", sys.argv[2]
    code = 0
    for group, names in group_files(sys.argv[3:]).items():
        if names:
            follow = [] if ci and group == "" else ["--follow-imports", "skip"]
            argv = ["mypy", "--python-version", python_version, *follow, *names]
            code |= subprocess.run(argv, check=False).returncode
    return code


if __name__ == "__main__":
    sys.exit(main())
"""
MYPY_SH_CONFIG = """\
repos:
- repo: local
  hooks:
  - id: mypy-3.12
    entry: tools/mypy.sh 1 "3.12"
    language: python
    types: [python]
    additional_dependencies: [mypy==1.11.1]
    stages: [manual]
"""
MYPY_SH = """\
#!/bin/bash
run_mypy() {
    if [ -z "$1" ]; then mypy --python-version "$PYTHON_VERSION"; return; fi
    mypy --follow-imports skip --python-version "$PYTHON_VERSION" "$@"
}
run_mypy # the first run: [tool.mypy] files
run_mypy vllm/engine
"""
PYPROJECT = """\
[project]
name = "vllm"

[tool.mypy]
ignore_missing_imports = true
check_untyped_defs = true
follow_imports = "silent"
files = ["vllm/*.py", "vllm/core"]
"""
# Upstream's own modules: a typed helper, and a file with a type error of upstream's.
HELPERS = 'def block_count() -> int:\n    return 4\n\n\ndef block_name() -> str:\n    return "block"\n'
UPSTREAM_CORE = '"""Core."""\n\nUPSTREAM_WRONG: int = "upstream"\nCOUNT = 1\n'
UPSTREAM_ENGINE = '"""Engine."""\n\nfrom vllm.engine.sizes import size\n\nTOTAL = size() + 1\n'
SIZES = 'def size() -> int:\n    return 1\n\n\nWRONG_ELSEWHERE: int = "not a changed file"\n'


@pytest.fixture
def ws(lint_ws: Workspace) -> Workspace:
    return lint_ws  # the mypy venv is built once per module (conftest's tool_cache)


def upstream(version: str, config: str, script: tuple[str, str]) -> dict[str, str | bytes]:
    tree = default_tree(version)
    tree.update(
        {
            ".pre-commit-config.yaml": config,
            script[0]: script[1],
            "pyproject.toml": PYPROJECT,
            "vllm/helpers.py": HELPERS,
            "vllm/core/__init__.py": "",
            "vllm/core/kv.py": UPSTREAM_CORE,
            "vllm/engine/__init__.py": "",
            "vllm/engine/loop.py": UPSTREAM_ENGINE,
            "vllm/engine/sizes.py": SIZES,
        }
    )
    return tree


def lint_of(ws: Workspace, capsys: pytest.CaptureFixture[str], version: str, tree: dict, changes: dict) -> dict:
    ws.publish(version, tree)
    assert ws.run("pin", "add", version) == 0
    ws.write_series(version, {})
    assert ws.run("apply", version) == 0
    commit_in(ws.checkout(version), changes, subject="[Core] typed additions")
    assert ws.run("export", version) == 0
    capsys.readouterr()
    code = ws.run("check", version, "--no-wheels", "--lint", "--json")
    data = json.loads(capsys.readouterr().out)
    lint = data["versions"][0]["lint"]
    assert code == (1 if lint["findings"] else 0), data["problems"]
    return lint


def found(lint: dict) -> set[tuple[str, int, str]]:
    return {(f["path"], f["line"], f["code"]) for f in lint["findings"]}


def test_the_release_mypy_script_runs_on_its_groups_and_blames_only_changed_lines(ws, capsys):
    tree = upstream("2.0", MYPY_PY_CONFIG, ("tools/pre_commit/mypy.py", MYPY_PY))
    # Upstream's file in the separate group that only Python >= 3.12 parses (PEP 701), as 0.11.1's tests have.
    tree["vllm/engine/newer.py"] = 'NESTED = f"{"quotes"}"\n'
    changes = {
        # The main group: imports followed (silently), so the helper's `int` is known and misused.
        "vllm/core/kv.py": UPSTREAM_CORE + "from vllm.helpers import block_count\n\nNAME: str = block_count()\n",
        # A separate group, checked whole with imports skipped: its sibling's `size() -> int` is known.
        "vllm/engine/loop.py": UPSTREAM_ENGINE + "LABEL: str = size()\n",
        # Excluded by the script: never checked.
        "vllm/core/ops/kernel.py": 'SKIPPED: int = "excluded"\n',
    }
    lint = lint_of(ws, capsys, "2.0", tree, changes)
    assert lint["tools"] == ["mypy 1.11.1 (py3.10)"]
    core_line = len(UPSTREAM_CORE.splitlines()) + 3
    engine_line = len(UPSTREAM_ENGINE.splitlines()) + 1
    assert found(lint) == {
        ("vllm/core/kv.py", core_line, "assignment"),
        ("vllm/engine/loop.py", engine_line, "assignment"),
    }
    (patch,) = {f["patch"] for f in lint["findings"]}
    assert patch.startswith("0001-")
    # UPSTREAM_WRONG is on a line upstream wrote: counted, not reported; sizes.py's error is in no changed file.
    assert lint["upstream_findings"] == 1
    if sys.version_info < (3, 12):  # left out of its group, said, and the group checked without it
        here = f"Python {sys.version_info[0]}.{sys.version_info[1]}"
        assert lint["notes"] == [f"mypy 1.11.1 (py3.10): left out 1 file(s) {here} cannot parse: vllm/engine/newer.py"]


def test_mypy_sh_first_run_follows_imports_as_ci_does(ws, capsys):
    """tools/mypy.sh: a changed file under `[tool.mypy] files` is checked by the first run, imports followed
    silently (so a misused upstream helper is caught, which `--follow-imports skip` would make `Any`)."""
    tree = upstream("2.1", MYPY_SH_CONFIG, ("tools/mypy.sh", MYPY_SH))
    changes = {
        "vllm/core/kv.py": UPSTREAM_CORE + "from vllm.helpers import block_name\n\nSIZE: int = block_name()\n",
        "vllm/engine/loop.py": UPSTREAM_ENGINE + "LABEL: str = size()\n",
        # Neither under [tool.mypy] files nor in a run_mypy directory: CI does not check it.
        "vllm/worker/runner.py": 'UNCHECKED: int = "not checked by CI"\n',
    }
    lint = lint_of(ws, capsys, "2.1", tree, changes)
    assert lint["tools"] == ["mypy 1.11.1 (py3.12)"]
    assert found(lint) == {
        ("vllm/core/kv.py", len(UPSTREAM_CORE.splitlines()) + 3, "assignment"),
        ("vllm/engine/loop.py", len(UPSTREAM_ENGINE.splitlines()) + 1, "assignment"),
    }
    assert lint["upstream_findings"] == 1


def test_the_mypy_script_hook_is_read_with_its_merged_settings(tmp_path):
    (tmp_path / ".pre-commit-config.yaml").write_text(MYPY_PY_CONFIG)
    config = load_lint_config(tmp_path)
    assert config is not None
    (hook,) = config.hooks  # mypy-local is the pre-commit stage's, not CI's
    assert (hook.id, hook.tool, hook.version, hook.requirements, hook.args) == (
        "mypy-3.10",
        "mypy",
        "1.11.1",
        ("mypy==1.11.1",),
        ("--python-version", "3.10"),
    )
    assert hook.script == "tools/pre_commit/mypy.py" and hook.types_or == {"python", "pyi"}
    assert [h.id for h in config.hooks_for("vllm/core/kv.pyi", frozenset({"pyi", "text"}))] == ["mypy-3.10"]
    assert config.hooks_for("docs/conf.py", frozenset({"python", "text"})) == []


def test_a_mypy_pinned_with_an_extra_is_read_as_its_version(tmp_path):
    # 0.22.1's hooks pin `mypy[faster-cache]==1.19.1`: the same mypy, installed with its extra.
    config_text = MYPY_PY_CONFIG.replace("[mypy==1.11.1]", '["mypy[faster-cache]==1.19.1", regex]')
    (tmp_path / ".pre-commit-config.yaml").write_text(config_text)
    config = load_lint_config(tmp_path)
    assert config is not None and not config.skipped
    (hook,) = config.hooks
    assert (hook.tool, hook.version, hook.requirements) == ("mypy", "1.19.1", ("mypy[faster-cache]==1.19.1", "regex"))
    (tmp_path / ".pre-commit-config.yaml").write_text(MYPY_PY_CONFIG.replace("[mypy==1.11.1]", "[mypy, regex]"))
    config = load_lint_config(tmp_path)
    assert config is not None and not config.hooks
    assert ("mypy-3.10", "mypy hook without a pinned `mypy==X` in additional_dependencies") in config.skipped
