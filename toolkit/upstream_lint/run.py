"""Lint the files a series changes with the linters of the vLLM release it is for, finding by finding per patch.

Run on a checkout with one commit per patch (the one `vpatch check` applies the series to). The files are
those the series adds or modifies, linted whole at the series' last commit, as vLLM's CI lints a pull
request's files; findings are kept only on lines a patch wrote (see `attribute`).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from toolkit.apply import PatchOutcome
from toolkit.checkout import UPSTREAM_REF, Checkout
from toolkit.envs import venv_python
from toolkit.upstream_lint.attribute import Finding, attribute, line_owners
from toolkit.upstream_lint.config import CONFIG_FILE, Hook, LintConfig, load_lint_config
from toolkit.upstream_lint.results import ResultCache
from toolkit.upstream_lint.tools import RawFinding, run_hook, tool_env
from toolkit.upstream_lint.typecheck import run_mypy

_TYPES_BY_SUFFIX = {".py": "python", ".pyi": "pyi", ".pyx": "cython", ".pxd": "cython"}


@dataclass
class LintResult:
    configured: bool  # False: the tree has no .pre-commit-config.yaml, nothing was linted
    tools: list[str] = field(default_factory=list)  # the hooks run, `ruff 0.9.3`, ...
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (hook id, why not run)
    files: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    upstream_findings: int = 0  # on lines no patch wrote: upstream's, not reported
    linted: int = 0  # (hook, file) pairs a tool ran on; the rest came from the result cache
    notes: list[str] = field(default_factory=list)  # what a tool run left out, and why
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "configured": self.configured,
            "config": CONFIG_FILE if self.configured else None,
            "tools": self.tools,
            "skipped": [{"hook": hook, "reason": reason} for hook, reason in self.skipped],
            "files": len(self.files),
            "findings": [finding.as_dict() for finding in self.findings],
            "upstream_findings": self.upstream_findings,
            "linted": self.linted,
            "notes": self.notes,
            "seconds": round(self.seconds, 3),
        }


def changed_files(checkout: Checkout) -> list[str]:
    """The files the series adds or modifies (deleted ones have nothing left to lint)."""
    return sorted(checkout.git.added_or_modified(UPSTREAM_REF, "HEAD"))


def file_types(path: Path) -> frozenset[str]:
    """pre-commit's file types of `path`, for the types the supported hooks ask for."""
    kinds = {_TYPES_BY_SUFFIX[path.suffix]} if path.suffix in _TYPES_BY_SUFFIX else set()
    try:
        head = path.read_bytes()[:8192]
        if b"\0" not in head:
            head.decode("utf-8")
            kinds.add("text")
    except (OSError, UnicodeDecodeError):
        pass
    return frozenset(kinds)


@contextmanager
def series_staged(checkout: Checkout) -> Iterator[None]:
    """HEAD at the base, the index at the series' last commit: `git diff --cached` is the whole series."""
    head = checkout.git.rev_parse("HEAD")
    assert head is not None  # a checkout always has its branch
    checkout.git.reset_soft(UPSTREAM_REF)
    try:
        yield
    finally:
        checkout.git.reset_soft(head)


class _Runner:
    """Runs a hook on files; mypy's script hooks also get every file pre-commit would hand them in CI."""

    def __init__(self, checkout: Checkout, config: LintConfig, cache_dir: Path) -> None:
        self.checkout, self.config, self.cache_dir = checkout, config, cache_dir
        self._tracked: dict[str, frozenset[str]] | None = None
        self.notes: list[str] = []  # what a run left out, and why
        self.unparsed: set[str] = set()  # files mypy could not parse here: left out of the later runs at once

    def all_files(self, hook: Hook) -> list[str]:
        """What `pre-commit run --all-files` hands `hook`: the tracked files its filters and the config's
        `exclude` let through."""
        if self._tracked is None:
            tree = self.checkout.path
            names = [os.fsdecode(path) for path in self.checkout.git.tracked_paths()]
            self._tracked = {name: file_types(tree / name) for name in names if (tree / name).is_file()}
        return [name for name, kinds in self._tracked.items() if hook in self.config.hooks_for(name, kinds)]

    def run(self, hook: Hook, files: list[str]) -> list[RawFinding]:
        venv = tool_env(self.cache_dir, hook)
        if hook.tool != "mypy":
            return run_hook(hook, venv, self.checkout.path, files)
        python = str(venv_python(venv)) if venv is not None else sys.executable
        universe = self.all_files(hook) if hook.script and not hook.script.endswith(".sh") else []
        findings, left_out = run_mypy(hook, python, self.checkout.path, files, universe, frozenset(self.unparsed))
        self.unparsed.update(left_out)
        if left_out:
            here = f"Python {sys.version_info[0]}.{sys.version_info[1]}"
            self.notes.append(
                f"{hook.label}: left out {len(left_out)} file(s) {here} cannot parse: {', '.join(left_out)}"
            )
        return findings


def lint_series(
    checkout: Checkout, outcomes: Sequence[PatchOutcome], cache_dir: Path, *, tools: Collection[str] | None = None
) -> LintResult:
    """Every finding of the release's linters on lines the applied series wrote (`tools`: only these
    runners, e.g. {"ruff"}; default all the release runs)."""
    started = time.perf_counter()
    tree = checkout.path
    config = load_lint_config(tree)
    if config is None:
        return LintResult(configured=False)
    result = LintResult(configured=True, skipped=list(config.skipped), files=changed_files(checkout))
    types = {name: file_types(tree / name) for name in result.files}
    commits = {o.commit: o.name for o in outcomes if o.commit}
    owners: dict[str, dict[int, str]] = {}
    hooks = [hook for hook in config.hooks if tools is None or hook.tool in tools]
    cached = ResultCache(cache_dir, checkout.git, result.files, hooks)
    everything = _Runner(checkout, config, cache_dir)
    # The release's own scripts may rewrite what they check (check_spdx_header.py adds the header): last.
    for hook in sorted(hooks, key=lambda h: h.tool == "spdx"):
        files = [name for name in result.files if hook in config.hooks_for(name, types[name])]
        result.tools.append(hook.label)
        reports: list[RawFinding] = []
        missing: list[str] = []
        if not hook.pass_filenames:
            if files:  # a script that finds its files in `git diff --cached`: shown the whole series
                with series_staged(checkout):
                    reports = run_hook(hook, tool_env(cache_dir, hook), tree, files)
                result.linted += 1
            files = []
        for name in files:
            known = cached.get(hook, name)
            if known is None:
                missing.append(name)
            else:
                reports.extend(known)
        if missing:
            fresh = everything.run(hook, missing)
            for name in missing:
                cached.put(hook, name, fresh)
            reports.extend(fresh)
            result.linted += len(missing)
        for raw in reports:
            if raw.path not in owners:
                owners[raw.path] = line_owners(checkout.git, raw.path, commits) if raw.path in types else {}
            found = attribute(raw, hook.label, owners[raw.path])
            result.findings.extend(found)
            result.upstream_findings += not found
    # One line per finding: a rule hit twice on one line (two quoted annotations) is one thing to fix.
    result.findings = sorted(set(result.findings), key=lambda f: (f.patch, f.path, f.line, f.tool, f.code))
    result.notes = everything.notes
    result.seconds = time.perf_counter() - started
    return result


__all__ = ["LintResult", "changed_files", "lint_series"]
