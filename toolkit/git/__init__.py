"""The git adapter: the only code that runs git or reads a repository, with the domain's verbs.

Callers say what they want done (`am`, `apply`, `private_index(...).apply`, `write_tree`, `commit_tree`,
`format_patch`, `patch_ids`, `range_diff`, `reset_hard` ...) and never spell out git's arguments; each text
format git writes or reads (C-quoted paths, `git apply -v` and `git am` output) is read in one place,
`toolkit.git.formats`. The modules, one import surface (`from toolkit.git import ...`):

* `runner`: the fixed environment and configuration, `GitError`, `Result`, the one `subprocess` call;
* `repo`: the `Git` class; discovery, refs, configuration and the git directory, read with GitPython;
* `worktree`, `index`, `mail`, `history`: the verbs, as mixins of `Git`;
* `formats`: the text formats (`quoting`: the C-quoted paths among them);
* `refs`: a bare repository's loose refs read from its files (a warm build's one question to git).

Each name is imported from its module on first use (`__getattr__` below): `vpatch build` from warm caches needs
`GitError`, a path unquoted and one ref, and loading every verb module, their dataclasses and patterns for it cost
~20-30 ms per run.

GitPython, and where a raw `git` run stays (`bench/git_adapter_costs.py` on the 2-core machine under its
shared load, a vLLM sdist base from the cache, GitPython 3.2.1, git 2.39: the best of 30-60 calls, in five
runs; medians vary 1-5x with the load):

* Repository discovery, the git directory, the common directory, refs (loose and packed, symbolic refs
  followed) and the repository's configuration (read and written) are GitPython: no process at all
  (`Repo()` 0.24-0.35 ms). `import git` costs ~100 ms, so it is imported on first use: a build from warm
  caches never pays it.
* Commands are started with `subprocess`, not GitPython's runner (`git.cmd.Git.execute`): that runner
  builds the child's environment from a copy of `os.environ` and can only add to it, so it cannot drop an
  inherited `GIT_DIR`, `GIT_INDEX_FILE`, `GIT_WORK_TREE` or `GIT_OBJECT_DIRECTORY` (set when vpatch runs
  from a git hook or `git rebase --exec`), any of which would point our commands at the user's repository;
  and it feeds standard input only from a file object, where `am`, `apply`, `patch-id` and `mailinfo` take
  bytes. It is no faster either: a `rev-parse` costs 1.4-2.4 ms through it, 1.5-2.3 ms through `Runner.run`
  (fixed configuration and environment included).
* `rev_parse` and blob reads stay git runs: GitPython answers them from a persistent `git cat-file`
  process it starts per `Repo` (through the runner above, so with the caller's environment), which pays
  only while that `Repo` is kept (0.14-0.2 ms a rev-parse, 0.35-0.74 ms a blob), and such a long-lived
  child would outlive the stage. Per call, as the verbs are used, a fresh `Repo` costs more than git:
  2.1-7.3 ms for `Repo` + `rev_parse` against 1.5-2.3 ms, 4.1-7.7 ms for `Repo` + a blob against
  1.7-3.0 ms for `git cat-file blob`. GitPython's `rev_parse` also knows less of git's revision syntax
  (a range's sides come from users).
* Verbs that write (apply, am, commit, commit-tree, write-tree, fast-import, format-patch, range-diff,
  patch-id ...) have no GitPython equivalent that is not itself a git run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The names this package exports, by the module that defines them: `__getattr__` imports a name's module on its
# first use, and `__all__` lists them. Mypy cannot read a name's type off this table, so the imports below say
# the same for it; they run for the type checker only, and tests/unit/git/test_surface.py keeps the two alike.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "formats": (
        "ALREADY_APPLIED",
        "FILE_REFUSALS",
        "THREE_WAY_NOTE",
        "ApplyingWithRejects",
        "ApplyLine",
        "CheckingPatch",
        "FileRefused",
        "HunkOffset",
        "HunkRejected",
        "PatchFailedAt",
        "am_sections",
        "fell_back_to_three_way",
        "read_apply_output",
    ),
    "history": ("LITERAL",),
    "index": ("Index", "IndexChange"),
    "mail": ("AM_ARGS", "FORMAT_PATCH_ARGS"),
    "quoting": ("fast_import_path", "printed_path", "quote_path", "unquote_name", "unquote_path"),
    "refs": ("ref_commit",),
    "repo": ("Git",),
    "runner": ("STABLE_CONFIG", "TOOL_EMAIL", "TOOL_NAME", "GitError", "Result", "git_env"),
}
_HOMES = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_HOMES)

if TYPE_CHECKING:  # F401: the names are this package's exports (`__all__`, built from _EXPORTS)
    from toolkit.git.formats import (  # noqa: F401
        ALREADY_APPLIED,
        FILE_REFUSALS,
        THREE_WAY_NOTE,
        ApplyingWithRejects,
        ApplyLine,
        CheckingPatch,
        FileRefused,
        HunkOffset,
        HunkRejected,
        PatchFailedAt,
        am_sections,
        fell_back_to_three_way,
        read_apply_output,
    )
    from toolkit.git.history import LITERAL  # noqa: F401
    from toolkit.git.index import Index, IndexChange  # noqa: F401
    from toolkit.git.mail import AM_ARGS, FORMAT_PATCH_ARGS  # noqa: F401
    from toolkit.git.quoting import fast_import_path, printed_path, quote_path, unquote_name, unquote_path  # noqa: F401
    from toolkit.git.refs import ref_commit  # noqa: F401
    from toolkit.git.repo import Git  # noqa: F401
    from toolkit.git.runner import STABLE_CONFIG, TOOL_EMAIL, TOOL_NAME, GitError, Result, git_env  # noqa: F401


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # the next lookup is a plain one
    return value
