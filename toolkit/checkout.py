"""Work trees: a clone of a cached base with the upstream head marked by a ref.

A checkout is an ordinary git repository a maintainer can edit: branch
`vpatch/<version>` holds one commit per patch on top of `refs/vpatch/upstream`.
`.git/vpatch.json` remembers which pin and series it belongs to.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from toolkit import faults, tempnames
from toolkit.cache import atomic_write_text, update_file
from toolkit.errors import VpatchError
from toolkit.git import Git
from toolkit.sources import Base

UPSTREAM_REF = "refs/vpatch/upstream"
STATE_FILE = "vpatch.json"
# In-tree .gitattributes must not rewrite bytes (eol conversion, filters): the work
# tree has to be byte-identical to the release it came from.
NEUTRAL_ATTRIBUTES = "* -text -filter -ident\n"


@dataclass(frozen=True)
class Checkout:
    path: Path
    version: Version
    project: str
    base_commit: str
    source: str

    @property
    def git(self) -> Git:
        return Git(self.path)

    @property
    def branch(self) -> str:
        return f"vpatch/{self.version}"


def create_checkout(base: Base, dest: Path, *, sparse_paths: tuple[str, ...] | None = None) -> Checkout:
    """Clone the base into `dest` (which must not exist or be empty) and check out its commit.

    The clone is made beside `dest` under a temp name and renamed into place once `.git/vpatch.json`
    is written: a directory under the final name is always recognisably vpatch's (a killed run leaves
    only the temp name, which the next one removes).
    With `sparse_paths`, only those files are written to the work tree (enough for
    applying patches that touch nothing else, which is all a wheel overlay needs).
    """
    if dest.exists() and any(dest.iterdir()):
        raise VpatchError(f"{dest} already exists and is not empty")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tempnames.sweep(dest.parent)  # checkouts of killed runs
    staged = Path(tempfile.mkdtemp(prefix=tempnames.prefix("checkout"), suffix=f".{dest.name}", dir=dest.parent))
    try:
        repo = Git.clone_local(base.repo, staged)
        git_dir = repo.git_dir()
        (git_dir / "info").mkdir(exist_ok=True)
        (git_dir / "info" / "attributes").write_text(NEUTRAL_ATTRIBUTES)
        if sparse_paths is not None:
            repo.sparse_checkout([f"/{_escape_pattern(p)}" for p in sparse_paths])
        branch = f"vpatch/{base.pin.version}"
        repo.checkout_branch(branch, base.commit)
        repo.update_ref(UPSTREAM_REF, base.commit)
        write_state(Checkout(staged, base.pin.version, base.pin.project, base.commit, base.source), {})
        faults.reached("checkout.staged")
        if dest.exists():
            dest.rmdir()  # empty (checked above)
        os.replace(staged, dest)
        faults.reached("checkout.placed")
        return Checkout(dest, base.pin.version, base.pin.project, base.commit, base.source)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def _escape_pattern(path: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]!#\\" else c for c in path)


def borrow_objects(checkout: Checkout, objects_dirs: list[Path]) -> None:
    """Let the checkout read objects from other repositories' object directories (git alternates).

    The alternates file is replaced whole (temp file and rename): git processes already running in the
    checkout may read it meanwhile. Read and replaced under the lock, so two borrowers both get in.
    """
    alternates = checkout.git.git_dir() / "objects" / "info" / "alternates"

    def change(old: bytes | None) -> bytes | None:
        listed = old.decode("utf-8").splitlines() if old else []
        added = [str(path) for path in objects_dirs if str(path) not in listed]
        return "".join(f"{line}\n" for line in [*listed, *added]).encode() if added else None

    update_file(alternates, change)


def add_base_objects(checkout: Checkout, bases: list[Base], *, borrow: bool = False) -> None:
    """Make other releases' blobs available, so `git am --3way` can rebuild a patch's preimage.

    `borrow`: read them in place from the cached base repositories (git alternates) instead of copying
    them in; instant, but the checkout then needs those cache entries for as long as it refers to them
    (rebase checkouts: a working area whose result is the series under patches/).
    """
    others = [base for base in bases if base.commit != checkout.base_commit]
    if borrow and others:
        borrow_objects(checkout, [Git(base.repo).git_dir() / "objects" for base in others])
    for base in others:
        if borrow:
            checkout.git.update_ref(f"refs/vpatch/bases/{base.pin.version}", base.commit)
        else:
            checkout.git.fetch(str(base.repo), f"+{base.commit}:refs/vpatch/bases/{base.pin.version}")


def state_text(checkout: Checkout, extra: dict) -> str:
    """The state file's content: the checkout's identity and `extra`."""
    state = {
        "version": str(checkout.version),
        "project": checkout.project,
        "base_commit": checkout.base_commit,
        "source": checkout.source,
        **extra,
    }
    return json.dumps(state, indent=1, sort_keys=True) + "\n"


def write_state(checkout: Checkout, extra: dict) -> None:
    atomic_write_text(checkout.git.git_dir() / STATE_FILE, state_text(checkout, extra))


def update_state(checkout: Checkout, changes: dict, *, drop: tuple[str, ...] = ()) -> None:
    """Merge `changes` into the checkout's state file and remove the keys in `drop`."""
    state = read_state(checkout.path)
    for key in drop:
        state.pop(key, None)
    state.update(changes)
    atomic_write_text(checkout.git.git_dir() / STATE_FILE, json.dumps(state, indent=1, sort_keys=True) + "\n")


def read_state(path: Path) -> dict:
    git_dir = path / ".git"
    state_file = git_dir / STATE_FILE
    if not state_file.is_file():
        raise VpatchError(f"{path} is not a vpatch checkout (no .git/{STATE_FILE}); create one with `vpatch apply`")
    try:
        return json.loads(state_file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise VpatchError(f"unreadable checkout state: {exc}", path=state_file) from None


def open_checkout(path: Path) -> Checkout:
    state = read_state(path)
    tempnames.sweep(path / ".git")  # staged state files of killed runs
    checkout = Checkout(path, Version(state["version"]), state["project"], state["base_commit"], state["source"])
    upstream = checkout.git.rev_parse(UPSTREAM_REF)
    if upstream is None:
        raise VpatchError(f"{path}: the ref {UPSTREAM_REF} is missing; the checkout was damaged")
    return checkout


def is_vpatch_checkout(path: Path) -> bool:
    return (path / ".git" / STATE_FILE).is_file()


def clear_stale_index_lock(path: Path) -> str | None:
    """Remove `.git/index.lock` when no git process works in `path` (a killed git left it); else refuse.

    Returns a one-line note when it removed the lock.
    """
    lock = path / ".git" / "index.lock"
    if not lock.exists():
        return None
    if _git_process_in(path):
        raise VpatchError(
            "a git process is working in this checkout and holds the lock; wait for it to finish, "
            "then run the command again",
            path=lock,
        )
    lock.unlink(missing_ok=True)
    return f"removed the stale lock {lock} (left by a killed git; no git process holds it)"


def _git_process_in(path: Path) -> bool:
    """Whether a live git process has its working directory in `path` (Linux /proc; elsewhere: assume yes)."""
    proc = Path("/proc")
    if not (proc / "self" / "cwd").exists():
        return True
    root = path.resolve()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().strip().startswith("git"):
                continue
            cwd = (entry / "cwd").resolve()
        except OSError:
            continue
        if cwd == root or root in cwd.parents:
            return True
    return False
