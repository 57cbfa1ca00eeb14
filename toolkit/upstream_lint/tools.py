"""Running one hook of a vLLM release over files of a source tree, and reading what it reports.

Each tool runs in a venv of its own, holding the release's pinned version (`ruff==0.9.3`, ...), cached
under `<cache>/envs/lint-<tool>-<version>-<key>` (built once under a lock, stamped when complete), with
the tree as working directory, so it reads the release's configuration exactly as under pre-commit.
Formatters are asked for a diff instead of rewriting; each hunk becomes one finding on the lines it changes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from toolkit.envs import cached_env, venv_python
from toolkit.errors import VpatchError
from toolkit.upstream_lint.config import Hook

# A hung tool, not a slow one: one mypy run of 0.13.0 took over 600 s on 2 cores at load 30.
TOOL_TIMEOUT = 1800.0
# Part of every cached report's key: bump it when a runner's command line or output reading changes.
RUNNERS_VERSION = 3
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+\d+(?:,\d+)? @@")
_CODESPELL = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<message>.+)$")


@dataclass(frozen=True)
class RawFinding:
    """What a tool reported, before attribution: `lines` are the lines of the file it is about."""

    path: str  # relative to the tree
    lines: tuple[int, ...]
    code: str
    message: str


def tool_env(cache_dir: Path, hook: Hook) -> Path | None:
    """The hook's cached tool venv (None: a local script, run by this interpreter)."""
    if not hook.requirements:
        return None
    return cached_env(cache_dir, f"lint-{hook.tool}-{hook.version}", hook.requirements, with_torch=False, resolve=True)


def run_hook(hook: Hook, venv: Path | None, tree: Path, files: list[str]) -> list[RawFinding]:
    """Run `hook` on `files` (paths relative to `tree`) and return everything it reports."""
    if not files:
        return []
    python = str(venv_python(venv)) if venv is not None else sys.executable
    if hook.tool == "ruff":
        argv = [python, "-m", "ruff", "check", "--no-fix", "--exit-zero", "--output-format", "json", *hook.args]
        return _ruff_findings(run_tool(hook, [*argv, "--", *files], tree), tree)
    if hook.tool == "ruff-format":
        argv = [python, "-m", "ruff", "format", "--diff", *hook.args, "--", *files]
        return _diff_findings(run_tool(hook, argv, tree, ok=(0, 1)), tree, hook)
    if hook.tool == "yapf":
        argv = [python, "-m", "yapf", "--diff", *hook.args, *files]
        return _diff_findings(run_tool(hook, argv, tree, ok=(0, 1)), tree, hook)
    if hook.tool == "isort":
        argv = [python, "-m", "isort", "--check-only", "--diff", *hook.args, *files]
        return _diff_findings(run_tool(hook, argv, tree, ok=(0, 1)), tree, hook)
    if hook.tool == "codespell":
        argv = [python, "-m", "codespell_lib", *hook.args, *files]
        return _codespell_findings(run_tool(hook, argv, tree, ok=(0, 65)))
    if hook.tool == "spdx":
        return _spdx_findings(hook, python, tree, files)
    if hook.tool in ("regex-import", "triton-import"):
        return _staged_script_findings(hook, python, tree)
    raise VpatchError(f"no runner for hook {hook.id} ({hook.tool})")


def run_tool(
    hook: Hook, argv: list[str], tree: Path, *, ok: tuple[int, ...] = (0,), env: dict[str, str] | None = None
) -> str:
    """`argv` run in `tree`; its standard output, or a one-line error when its exit code is not in `ok`."""
    code, stdout, stderr = run_tool_status(hook, argv, tree, env=env)
    if code not in ok:
        raise tool_failed(hook, code, stderr or stdout)
    return stdout


def run_tool_status(
    hook: Hook, argv: list[str], tree: Path, *, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """`argv` run in `tree`: (exit code, standard output, standard error)."""
    try:
        proc = subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=TOOL_TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        raise VpatchError(f"{hook.label} did not finish within {TOOL_TIMEOUT:.0f} s") from None
    return proc.returncode, proc.stdout, proc.stderr


def tool_failed(hook: Hook, code: int, output: str) -> VpatchError:
    tail = output.strip().splitlines()[-1:] or [f"exit code {code}"]
    return VpatchError(f"{hook.label} failed (exit {code}): {tail[0]}")


def _relative(name: str, tree: Path) -> str:
    path = Path(name)
    if path.is_absolute():
        try:
            return path.resolve().relative_to(tree.resolve()).as_posix()
        except ValueError:
            return path.as_posix()
    return path.as_posix().removeprefix("./")


def _ruff_findings(output: str, tree: Path) -> list[RawFinding]:
    try:
        reports = json.loads(output or "[]")
    except ValueError:
        raise VpatchError(f"ruff printed no JSON report: {output[:200]!r}") from None
    findings = []
    for report in reports:
        row = int(report.get("location", {}).get("row") or 1)
        end = int(report.get("end_location", {}).get("row") or row)
        findings.append(
            RawFinding(
                _relative(report["filename"], tree),
                tuple(range(row, max(row, end) + 1)),
                str(report.get("code") or "syntax-error"),
                str(report.get("message", "")),
            )
        )
    return findings


def _diff_findings(output: str, tree: Path, hook: Hook) -> list[RawFinding]:
    """One finding per hunk of a formatter's unified diff, on the old lines it would change."""
    findings: list[RawFinding] = []
    path: str | None = None
    hunk: list[int] = []
    old_line = 0
    insert_at: int | None = None

    def flush() -> None:
        if path is not None and (hunk or insert_at is not None):
            lines = tuple(hunk) if hunk else (max(insert_at or 1, 1), (insert_at or 0) + 1)
            span = f"line {lines[0]}" if len(lines) == 1 else f"lines {lines[0]}-{lines[-1]}"
            findings.append(RawFinding(path, lines, "format", f"would reformat {span}"))

    for line in output.splitlines():
        if line.startswith("--- "):
            flush()
            hunk, insert_at = [], None
            name = line[4:].split("\t", 1)[0].strip()
            path = _relative(re.sub(r":before$", "", name).removeprefix("a/"), tree)
        elif line.startswith("+++ "):
            continue
        elif match := _HUNK.match(line):
            flush()
            hunk, insert_at = [], None
            old_line = int(match.group(1))
            if match.group(2) == "0":
                old_line += 1  # an insertion-only hunk names the line before it
        elif line.startswith("-"):
            hunk.append(old_line)
            old_line += 1
        elif line.startswith("+"):
            if not hunk and insert_at is None:
                insert_at = old_line - 1
        elif line.startswith(" "):
            old_line += 1
    flush()
    return findings


def _codespell_findings(output: str) -> list[RawFinding]:
    findings = []
    for line in output.splitlines():
        match = _CODESPELL.match(line.strip())
        if match:
            path = match["path"].removeprefix("./")
            findings.append(RawFinding(path, (int(match["line"]),), "spelling", match["message"]))
    return findings


def _spdx_findings(hook: Hook, python: str, tree: Path, files: list[str]) -> list[RawFinding]:
    """The release's own tools/check_spdx_header.py; it lists the files that lack the header."""
    listed = run_tool(hook, [python, _script(hook, tree), *files], tree, ok=(0, 1))
    missing = {line.strip() for line in listed.splitlines() if line.startswith("  ")}
    return [RawFinding(f, (1,), "spdx", "missing the SPDX-License-Identifier header") for f in files if f in missing]


_REGEX_FILE = re.compile(r"^❌ (?P<path>.+):$")
_REGEX_LINE = re.compile(r"^  Line (?P<line>\d+): (?P<code>.*)$")
_TRITON_LINE = re.compile(r"^❌ (?P<path>[^:]+):(?P<line>\d+): (?P<code>.*)$")


def _staged_script_findings(hook: Hook, python: str, tree: Path) -> list[RawFinding]:
    """tools/enforce_regex_import.py (`❌ path:` then `  Line N: code`) and tools/check_triton_import.py
    (`❌ path:N: code`), run on the staged series (the caller stages it)."""
    listed = run_tool(hook, [python, _script(hook, tree)], tree, ok=(0, 1))
    findings, path = [], None
    for line in listed.splitlines():
        if hook.tool == "regex-import":
            if match := _REGEX_FILE.match(line):
                path = match["path"]
            elif (match := _REGEX_LINE.match(line)) and path is not None:
                message = f"`{match['code']}`: use `import regex as re` (vLLM's rule)"
                findings.append(RawFinding(path, (int(match["line"]),), "import", message))
        elif match := _TRITON_LINE.match(line):
            message = f"`{match['code']}`: use `from vllm.triton_utils import triton` (vLLM's rule)"
            findings.append(RawFinding(match["path"], (int(match["line"]),), "import", message))
    return findings


def _script(hook: Hook, tree: Path) -> str:
    entry = hook.entry.split()
    if len(entry) != 2 or entry[0] != "python" or hook.script is None or not (tree / hook.script).is_file():
        raise VpatchError(f"hook {hook.id}: entry {hook.entry!r} is not a script of the tree")
    return hook.script


__all__ = ["RawFinding", "run_hook", "run_tool", "run_tool_status", "tool_env", "tool_failed"]
