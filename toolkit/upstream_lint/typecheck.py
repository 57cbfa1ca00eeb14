"""vLLM's mypy hooks, run the way the release's CI runs them, on the groups that hold the files a series changes.

Two generations of the hook, each read from the release's own files:

* `tools/mypy.sh 1 "3.x"` (0.8.4 ... 0.10.2): a first run `mypy --python-version 3.x` over `[tool.mypy]
  files` of pyproject.toml (imports followed silently, from the config), then `run_mypy DIR` per directory
  the script names, each whole and on its own with `--follow-imports skip`. vpatch runs each directory that
  holds a changed file whole, as CI does, and the first run on the changed files it covers (with imports
  followed silently, mypy's report on a file does not depend on which other files were named).
* `python tools/pre_commit/mypy.py 1 "3.x"` (0.11.1 on): pre-commit hands the script every Python file
  (`--all-files` in CI); the script's own `group_files` sorts them into its groups, the main group (`""`,
  imports followed silently) and the separate groups (`--follow-imports skip`, each group's files together),
  and drops the rest. vpatch asks the release's `group_files` (run in the tool venv) for the groups of every
  tracked file, and runs the script itself on what CI would hand it for the groups that hold a changed file:
  a separate group's every file, the main group's changed files.

Only reports on changed files are kept: a report elsewhere cannot be placed on a line a patch wrote.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.upstream_lint.config import Hook
from toolkit.upstream_lint.tools import RawFinding, run_tool_status, tool_failed

_MYPY = re.compile(r"^(?P<path>[^:\s][^:]*):(?P<line>\d+): error: (?P<message>.+?)  \[(?P<code>[a-z-]+)\]$")
# Part of a cached mypy report's key (with tools.RUNNERS_VERSION): bump it when how mypy is run changes.
MYPY_RUNNER_VERSION = 1
_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# Asks the release's tools/pre_commit/mypy.py how it groups files (run by the tool venv's Python, which has
# the `regex` the script imports): file names as JSON on stdin, {group: [files]} as JSON on stdout.
_GROUPS = (
    "import json, runpy, sys\n"
    "script = runpy.run_path(sys.argv[1])\n"
    "if 'group_files' not in script:\n"
    "    sys.exit(sys.argv[1] + ' defines no group_files')\n"
    "json.dump(script['group_files'](json.load(sys.stdin)), sys.stdout)\n"
)


Checked = tuple[list[RawFinding], list[str]]  # the reports on changed files; the files left out unparsed


def run_mypy(
    hook: Hook, python: str, tree: Path, files: list[str], universe: list[str], unparsed: frozenset[str] = frozenset()
) -> Checked:
    """mypy's reports on `files` (the changed files), run as the release's CI runs it, and the files left out
    because this Python cannot parse them (`unparsed`: those an earlier run found, left out at once);
    `universe` is every file pre-commit would hand the hook in CI (`--all-files`), for the groups that are
    checked whole."""
    script = hook.script
    if not script or not (tree / script).is_file():
        raise VpatchError(f"hook {hook.id}: entry {hook.entry!r} is not a script of the tree")
    if script.endswith(".sh"):
        return _by_directory(hook, python, tree, files, unparsed)
    return _by_script(hook, python, tree, files, universe, unparsed)


def _by_directory(hook: Hook, python: str, tree: Path, files: list[str], unparsed: frozenset[str]) -> Checked:
    """tools/mypy.sh: its first run over `[tool.mypy] files`, then each `run_mypy DIR` whole."""
    text = (tree / (hook.script or "")).read_text(encoding="utf-8")
    runs: list[list[str]] = []
    first = [name for name in files if _in_config_files(tree, name)]
    if first:  # `run_mypy` without a target: `mypy --python-version X`, follow_imports from the config
        runs.append(first)
    for line in re.findall(r"^run_mypy\s+([^#\s].*?)\s*$", text, re.M):
        words = shlex.split(line)  # `run_mypy --exclude 'vllm/.../ops' vllm/model_executor`: the flags kept
        target = words[-1].rstrip("/") + "/"
        if any(name.startswith(target) for name in files):
            runs.append(["--follow-imports", "skip", *words])
    findings: list[RawFinding] = []
    left_out: list[str] = []
    for targets in runs:
        # No cache left in the tree (--cache-dir): the tree is the release's, vpatch only reads it.
        argv = [python, "-m", "mypy", "--cache-dir", os.devnull, *hook.args]
        found, dropped = _checked(hook, argv, targets, tree, set(files), unparsed)
        findings += found
        left_out += dropped
    return findings, left_out


def _by_script(
    hook: Hook, python: str, tree: Path, files: list[str], universe: list[str], unparsed: frozenset[str]
) -> Checked:
    """tools/pre_commit/mypy.py: the release's script on what CI hands it for the groups of `files`."""
    groups = release_groups(hook, python, tree, sorted(set(universe) | set(files)))
    wanted = set(files)
    selected: list[str] = []
    for group, members in groups.items():
        if wanted.intersection(members):
            selected += [name for name in members if name in wanted] if group == "" else members
    if not selected:
        return [], []
    bin_dir = str(Path(python).parent)  # the script runs `mypy` from PATH, as under pre-commit
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MYPY_CACHE_DIR": os.devnull}
    return _checked(hook, [python, *_script_argv(hook)], selected, tree, wanted, unparsed, env)


def _checked(
    hook: Hook,
    argv: list[str],
    targets: list[str],
    tree: Path,
    wanted: set[str],
    known: frozenset[str],
    env: dict[str, str] | None = None,
) -> Checked:
    """One run, its reports on `wanted`. A file of `targets` this Python cannot parse stops mypy (exit 2):
    CI parses with a newer Python (0.11.1's tests use 3.12's f-strings; vpatch runs on 3.11), so such a file,
    when no patch changed it, is left out and the run made again."""
    left_out = sorted(known.intersection(targets) - wanted)
    targets = [name for name in targets if name not in left_out]
    while True:
        code, stdout, stderr = run_tool_status(hook, [*argv, *targets], tree, env=env)
        reports = mypy_findings(stdout)
        unparsed = {r.path for r in reports if r.code == "syntax"} - wanted
        if code in (0, 1) or (not unparsed and any(r.code == "syntax" for r in reports)):
            return [r for r in reports if r.path in wanted], left_out
        if not unparsed & set(targets):
            if unparsed:
                raise VpatchError(f"{hook.label}: {min(unparsed)} does not parse on Python {_PY} (CI's is newer)")
            raise tool_failed(hook, code, stderr or stdout)
        left_out += sorted(unparsed & set(targets))
        targets = [name for name in targets if name not in unparsed]


def release_groups(hook: Hook, python: str, tree: Path, names: list[str]) -> dict[str, list[str]]:
    """{group: files} as the release's own `group_files` sorts `names`."""
    try:
        proc = subprocess.run(
            [python, "-c", _GROUPS, hook.script or ""],
            cwd=tree,
            input=json.dumps(names),
            capture_output=True,
            text=True,
            timeout=120,
        )
    except subprocess.TimeoutExpired:
        raise VpatchError(f"{hook.script}: group_files did not finish within 120 s") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit code {proc.returncode}"]
        raise VpatchError(f"{hook.script}: cannot read its file groups: {tail[0]}")
    groups = json.loads(proc.stdout)
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise VpatchError(f"{hook.script}: group_files returned {type(groups).__name__}, not {{group: [files]}}")
    return {str(group): [str(name) for name in members] for group, members in groups.items()}


def _script_argv(hook: Hook) -> list[str]:
    """`python tools/pre_commit/mypy.py 1 "3.10"` -> [script, "1", "3.10"] (the interpreter is the venv's)."""
    words = shlex.split(hook.entry)
    return words[1:] if words and words[0].startswith("python") else words


def _in_config_files(tree: Path, name: str) -> bool:
    """Whether mypy's own run over pyproject's `[tool.mypy] files` checks `name` (globs expanded, directories
    crawled less `exclude`, as mypy does)."""
    try:
        config = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8")).get("tool", {}).get("mypy", {})
    except (OSError, tomllib.TOMLDecodeError):
        return False
    entries = config.get("files", [])
    entries = [e.strip() for e in entries.split(",")] if isinstance(entries, str) else [str(e) for e in entries]
    excludes = config.get("exclude", [])
    excludes = [excludes] if isinstance(excludes, str) else [str(e) for e in excludes]
    for entry in entries:
        if any(ch in entry for ch in "*?["):  # a glob: the files it names, `exclude` not applied (as mypy)
            named = name in {p.relative_to(tree).as_posix() for p in tree.glob(entry)}
        else:  # a file, or a directory mypy crawls less `exclude`
            inside = name == entry or name.startswith(entry.rstrip("/") + "/")
            named = inside and not any(re.search(pattern, name) for pattern in excludes)
        if named:
            return True
    return False


def mypy_findings(output: str) -> list[RawFinding]:
    findings = []
    for line in output.splitlines():
        match = _MYPY.match(line)
        if match:
            findings.append(RawFinding(match["path"], (int(match["line"]),), match["code"], match["message"]))
    return findings


__all__ = ["MYPY_RUNNER_VERSION", "mypy_findings", "release_groups", "run_mypy"]
