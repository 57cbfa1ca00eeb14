"""What linters a vLLM release runs, read from its own `.pre-commit-config.yaml`.

vLLM's CI runs `pre-commit run --all-files --hook-stage manual`; the hooks of that stage are the release's
linters. pre-commit itself cannot be used here (it clones each hook's repository, and only package
registries are reachable), so each hook vpatch knows is mapped to its PyPI package at the release's `rev`
(ruff-pre-commit's tags are ruff's versions; yapf, isort and codespell tag their releases), and run from
the source tree, where the tools read the release's `pyproject.toml` ([tool.ruff], [tool.isort],
[tool.codespell], .yapfignore) as they do under pre-commit. Hooks vpatch does not run are listed with why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import VpatchError

CONFIG_FILE = ".pre-commit-config.yaml"
CI_STAGE = "manual"  # the stage vLLM's pre-commit workflow runs (`--hook-stage manual`)

# Hook repositories vpatch installs from PyPI: repo -> {hook id: (tool, package)}.
REMOTE_TOOLS: dict[str, dict[str, tuple[str, str]]] = {
    "github.com/google/yapf": {"yapf": ("yapf", "yapf")},
    "github.com/astral-sh/ruff-pre-commit": {
        "ruff": ("ruff", "ruff"),
        "ruff-check": ("ruff", "ruff"),
        "ruff-format": ("ruff-format", "ruff"),
    },
    "github.com/codespell-project/codespell": {"codespell": ("codespell", "codespell")},
    "github.com/pycqa/isort": {"isort": ("isort", "isort")},
}
# The file types each tool's own hook definition declares (`types_or`), which the config does not repeat.
DEFAULT_TYPES: dict[str, frozenset[str]] = {
    "yapf": frozenset({"python"}),
    "ruff": frozenset({"python", "pyi"}),
    "ruff-format": frozenset({"python", "pyi"}),
    "isort": frozenset({"python", "pyi", "cython"}),
    "codespell": frozenset({"text"}),
}
# Local hooks whose entry is one of the release's own scripts under tools/, run as they are (the last two
# read what `git diff --cached` shows: vpatch stages the whole series for them).
LOCAL_SCRIPTS: dict[str, str] = {
    "check-spdx-header": "spdx",
    "enforce-import-regex-instead-of-re": "regex-import",
    "forbid-direct-triton-import": "triton-import",
}
# Flags that make a tool change files or pick its output format: vpatch asks for a report instead.
DROPPED_ARGS = frozenset({"--in-place", "-i", "--fix", "--verbose", "-v", "-vv"})
DROPPED_WITH_VALUE = frozenset({"--output-format"})
# CI's mypy hooks: `tools/mypy.sh 1 "3.9"` (0.8.4 ... 0.10.2), `python tools/pre_commit/mypy.py 1 "3.10"` (0.11.1 on).
_MYPY_PIN = re.compile(r"^mypy(?:\[[\w,.-]*\])?==(\S+)$")
_MYPY_ENTRY = re.compile(r"^(?:python3?\s+)?tools/(?:\w+/)*mypy\.(?:sh|py)\s+1\s+[\"']?(3\.\d+)[\"']?\s*$")
_VERSION = re.compile(r"^v?(\d+(?:\.\d+)*(?:[.-]?(?:a|b|rc|post|dev)\d*)?)$")


@dataclass(frozen=True)
class Hook:
    id: str
    tool: str  # runner name: ruff, ruff-format, yapf, isort, codespell, spdx
    version: str  # the tool's version ("" for a local script)
    requirements: tuple[str, ...]  # what its tool venv holds
    args: tuple[str, ...]  # the config's args, less DROPPED_ARGS
    files: str
    exclude: str
    types: frozenset[str]
    types_or: frozenset[str]
    entry: str = ""
    pass_filenames: bool = True

    @property
    def script(self) -> str | None:
        """The release's own script the hook runs (`tools/mypy.sh`, `tools/check_spdx_header.py`), if any."""
        return next((word for word in self.entry.split() if word.startswith("tools/")), None)

    @property
    def label(self) -> str:
        if self.tool == "mypy":  # one hook per Python version vLLM's CI checks
            return f"mypy {self.version} (py{self.args[-1]})"
        return f"{self.tool} {self.version}" if self.version else self.id

    def applies_to(self, path: str, file_types: frozenset[str]) -> bool:
        if not re.search(self.files, path) or re.search(self.exclude, path):
            return False
        if not self.types <= file_types:
            return False
        return not self.types_or or bool(self.types_or & file_types)


@dataclass(frozen=True)
class LintConfig:
    path: Path  # the config file in the tree
    exclude: str  # the top-level exclude pattern
    hooks: tuple[Hook, ...]
    skipped: tuple[tuple[str, str], ...]  # (hook id, why vpatch does not run it)

    def hooks_for(self, path: str, file_types: frozenset[str]) -> list[Hook]:
        if re.search(self.exclude, path):
            return []
        return [hook for hook in self.hooks if hook.applies_to(path, file_types)]


def load_lint_config(tree: Path) -> LintConfig | None:
    """The release's CI linters, or None when the tree carries no `.pre-commit-config.yaml`."""
    path = tree / CONFIG_FILE
    if not path.is_file():
        return None
    import yaml  # here: only a linting check pays for the import

    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        raise VpatchError(f"not valid YAML: {error}", path=path, line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict) or not isinstance(data.get("repos"), list):
        raise VpatchError("expected a mapping with a `repos` list (a pre-commit configuration)", path=path)
    default_stages = _strings(data.get("default_stages")) or (CI_STAGE,)
    hooks: list[Hook] = []
    skipped: list[tuple[str, str]] = []
    for repo in data["repos"]:
        if not isinstance(repo, dict) or not isinstance(repo.get("hooks"), list):
            raise VpatchError(f"repo entry {repo!r} has no `hooks` list", path=path)
        url = str(repo.get("repo", ""))
        for hook in repo["hooks"]:
            if not isinstance(hook, dict) or "id" not in hook:
                raise VpatchError(f"hook entry {hook!r} in {url} has no `id`", path=path)
            if CI_STAGE not in (_strings(hook.get("stages")) or default_stages):
                continue  # not run by vLLM's CI (a pre-commit-only or commit-msg hook)
            made = _hook(url, repo, hook, text)
            if isinstance(made, Hook):
                hooks.append(made)
            else:
                skipped.append((str(hook["id"]), made))
    return LintConfig(path, str(data.get("exclude", "^$")), tuple(hooks), tuple(skipped))


def _hook(url: str, repo: dict, hook: dict, text: str) -> Hook | str:
    """The hook vpatch runs, or why it does not run it."""
    hook_id = str(hook["id"])
    args = _kept_args(_strings(hook.get("args")))
    extra = _strings(hook.get("additional_dependencies"))
    if url == "local" and _MYPY_ENTRY.match(str(hook.get("entry", ""))):
        return _mypy_hook(hook_id, hook, extra)
    if url == "local":
        tool = LOCAL_SCRIPTS.get(hook_id)
        if tool is None:
            return f"local hook (vpatch runs these local hooks: {', '.join(LOCAL_SCRIPTS)})"
        return Hook(
            hook_id,
            tool,
            "",
            extra,
            args,
            *_filters(hook, frozenset()),
            entry=str(hook.get("entry", "")),
            pass_filenames=bool(hook.get("pass_filenames", True)),
        )
    known = REMOTE_TOOLS.get(_repo_key(url), {}).get(hook_id)
    if known is None:
        return f"{url}: not one of the tools vpatch installs from PyPI"
    tool, package = known
    version = _release_version(str(repo.get("rev", "")), text)
    if version is None:
        return f"rev {repo.get('rev')!r} of {url} names no release (and no `# X.Y.Z` comment gives one)"
    return Hook(hook_id, tool, version, (f"{package}=={version}", *extra), args, *_filters(hook, DEFAULT_TYPES[tool]))


def _mypy_hook(hook_id: str, hook: dict, extra: tuple[str, ...]) -> Hook | str:
    """`tools/mypy.sh 1 "3.9"` / `python tools/pre_commit/mypy.py 1 "3.10"`: mypy of the pinned version (from
    additional_dependencies, with the rest of them) for that Python; `typecheck` runs it as the script does."""
    python = _MYPY_ENTRY.match(str(hook["entry"]))
    # `mypy==1.11.1`; 0.22.1 pins `mypy[faster-cache]==1.19.1` (installed with its extra, as pre-commit does)
    pinned = [m.group(1) for m in map(_MYPY_PIN.match, extra) if m]
    if python is None or not pinned:
        return "mypy hook without a pinned `mypy==X` in additional_dependencies"
    files, exclude, types, types_or = _filters(hook, frozenset({"python"}))
    # The scripts check only vllm/ and tests/ (mypy.sh's runs, mypy.py's groups).
    return Hook(
        hook_id,
        "mypy",
        pinned[0],
        extra,
        ("--python-version", python.group(1)),
        files or "^(vllm|tests)/",
        exclude,
        types,
        types_or,
        entry=str(hook["entry"]),
    )


def _filters(hook: dict, default_types: frozenset[str]) -> tuple[str, str, frozenset[str], frozenset[str]]:
    types = frozenset(_strings(hook.get("types")))
    types_or = frozenset(_strings(hook.get("types_or")))
    if not types and not types_or:
        types_or = default_types
    return str(hook.get("files", "")), str(hook.get("exclude", "^$")), types, types_or


def _release_version(rev: str, text: str) -> str | None:
    """`v0.9.3` -> 0.9.3; a commit id pinned with a `# 6.0.0` comment on its line -> 6.0.0."""
    match = _VERSION.match(rev)
    if match:
        return match.group(1)
    for line in text.splitlines():
        if rev and rev in line and "#" in line:
            comment = _VERSION.match(line.split("#", 1)[1].strip())
            if comment:
                return comment.group(1)
    return None


def _repo_key(url: str) -> str:
    key = re.sub(r"^https?://", "", url.strip()).removesuffix(".git").rstrip("/")
    return key.lower()


def _kept_args(args: tuple[str, ...]) -> tuple[str, ...]:
    kept: list[str] = []
    skip_next = False
    for arg in args:
        if skip_next:
            skip_next = False
        elif arg in DROPPED_WITH_VALUE:
            skip_next = True
        elif arg not in DROPPED_ARGS and arg.split("=", 1)[0] not in DROPPED_WITH_VALUE:
            kept.append(arg)
    return tuple(kept)


def _strings(value: object) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(item) for item in value)
    return (str(value),)


__all__ = ["CONFIG_FILE", "Hook", "LintConfig", "load_lint_config"]
