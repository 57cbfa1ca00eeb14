"""Each hook's reports per file, cached under `<cache>/lint-results/`, so a re-check lints only what changed.

The tools are pinned and read nothing but the file and the tree's configuration, so their report on a file
is a function of (hook, configuration files, the file's blob): that is the key (for mypy, which checks whole
directories, also the base commit and the blobs of all the changed files). Attribution is not cached;
it is worked out again from the series' commits each time.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from toolkit.cache import atomic_write_text
from toolkit.checkout import UPSTREAM_REF
from toolkit.git import Git
from toolkit.records.codec import RecordError
from toolkit.records.lint_results import ReportedLine, decode_result, encode_result
from toolkit.upstream_lint.config import CONFIG_FILE, Hook
from toolkit.upstream_lint.tools import RUNNERS_VERSION, RawFinding
from toolkit.upstream_lint.typecheck import MYPY_RUNNER_VERSION

# What the supported tools read besides the file: their configuration files at the tree's root.
CONFIG_FILES = (
    CONFIG_FILE,
    "pyproject.toml",
    "setup.cfg",
    ".yapfignore",
    ".style.yapf",
    ".isort.cfg",
    ".codespellrc",
    "ruff.toml",
    ".ruff.toml",
)


def blob_ids(repo: Git, paths: list[str]) -> dict[str, str]:
    """{path: blob id} at HEAD for those of `paths` that exist there."""
    if not paths:
        return {}
    return repo.blob_ids("HEAD", paths)


class ResultCache:
    def __init__(self, cache_dir: Path, repo: Git, files: list[str], hooks: list[Hook]) -> None:
        self.root = cache_dir / "lint-results"
        scripts = [hook.script for hook in hooks if hook.script]
        self.blobs = blob_ids(repo, [*files, *CONFIG_FILES, *scripts])
        self.config = {name: self.blobs.get(name) for name in (*CONFIG_FILES, *scripts)}
        # mypy checks whole directories of the base with the changed files: its report on one depends on
        # the base and on every changed file.
        self.together = [repo.rev_parse(UPSTREAM_REF), sorted((name, self.blobs.get(name)) for name in files)]

    def _path(self, hook: Hook, path: str) -> Path | None:
        blob = self.blobs.get(path)
        if blob is None:
            return None
        what: list[object] = [
            RUNNERS_VERSION,
            hook.tool,
            hook.version,
            list(hook.requirements),
            list(hook.args),
            hook.entry,
            self.config,
            blob,
        ]
        if hook.tool == "mypy":
            what += [self.together, MYPY_RUNNER_VERSION]
        key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()
        return self.root / key[:2] / f"{key}.json"

    def get(self, hook: Hook, path: str) -> list[RawFinding] | None:
        entry = self._path(hook, path)
        if entry is None:
            return None
        try:
            reports = decode_result(entry.read_bytes())
        except (OSError, RecordError):
            return None  # not cached yet, or damaged: run the tool again
        if reports is None:
            return None
        return [RawFinding(path, tuple(r.lines), r.code, r.message) for r in reports]

    def put(self, hook: Hook, path: str, findings: list[RawFinding]) -> None:
        entry = self._path(hook, path)
        if entry is not None:
            reports = [ReportedLine(list(f.lines), f.code, f.message) for f in findings if f.path == path]
            atomic_write_text(entry, encode_result(reports))


__all__ = ["ResultCache", "blob_ids"]
