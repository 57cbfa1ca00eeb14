"""Rebase a series onto another pinned release: replay, resolve, review, write the new series.

`start_rebase` makes a checkout of the NEW release's base (`checkouts/<project>-NEW-rebase` by default),
fetches the OLD base's objects into it so `git am --3way` can rebuild each patch's preimage, and replays
the old series one patch at a time. Each patch ends up clean, merged (three-way, a recorded resolution, or
by hand), empty (NEW already has the change) or skipped. A conflict stops the replay with the `git am`
session left in place: resolve it with ordinary git (edit, `git add`) and `continue_rebase`, or
`skip_patch`, or `abort_rebase` (back to NEW's base).

git rerere is enabled in the checkout and its rr-cache is a link to `<cache>/rerere/<project>`, shared by
every rebase: a conflict resolved once is resolved the same way the next time, without stopping.

Only a completed rebase writes anything under patches/: the new series `patches/<project>-NEW/` (old
headers carried over, `Last-Update:` refreshed on patches whose change differs, empty patches left out),
`range-diff.txt` (old series on OLD's base vs new series on NEW's) and `evidence.json`, swapped in as one
directory; and, when NEW was pinned for the rebase, its pin. The old series is never touched. The state
lives in the checkout's `.git/vpatch.json` under `rebase`, with a private copy of the old patches (and
of NEW's pin when it is not written yet) in `.git/vpatch-rebase/`.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from toolkit import faults, ui
from toolkit.apply import AM_ARGS, am_in_progress, describe_apply_failure
from toolkit.checkout import (
    STATE_FILE,
    UPSTREAM_REF,
    Checkout,
    add_base_objects,
    create_checkout,
    read_state,
    state_text,
    update_state,
    write_state,
)
from toolkit.errors import VpatchError
from toolkit.export import _series_text
from toolkit.git import Git
from toolkit.lifecycle import CLEAN, CONFLICT, EMPTY, FAILED, KEPT, MERGED, PENDING, RETIRED, SKIPPED
from toolkit.lifecycle.upstream import (
    against_results,
    carried_forward,
    collect_evidence,
    conformance_evidence,
    patch_id,
    patch_ids,
)
from toolkit.model import Patch, Pin, Series, parse_patch
from toolkit.pins import load_pins, write_pin
from toolkit.project import Project
from toolkit.render import render_range, set_patch_file_header
from toolkit.sources import Base, materialize
from toolkit.txn import transaction

STATE_KEY = "rebase"
PRIVATE_DIR = "vpatch-rebase"
OLD_HEAD_REF = "refs/vpatch/rebase/old-head"
OLD_BASE_REF = "refs/vpatch/rebase/old-base"
EVIDENCE_FILE = "evidence.json"
RANGE_DIFF_FILE = "range-diff.txt"
THREE_WAY_NOTE = "Falling back to patching base and 3-way merge"
BECAME_EMPTY = "became empty: the new base already has this change"

Step = Callable[[str], AbstractContextManager]


def _no_step(_title: str) -> AbstractContextManager:
    return contextlib.nullcontext()


def rerere_cache(cache_dir: Path, project: str) -> Path:
    """Where resolutions are remembered across rebases (one rr-cache per project)."""
    return cache_dir / "rerere" / project


def default_rebase_dir(project: Project, new_pin: Pin) -> Path:
    return project.options.checkouts_dir / f"{new_pin.series_dirname}-rebase"


def rebase_state(path: Path) -> dict | None:
    """The rebase in progress in the checkout at `path`, or None."""
    return read_state(path).get(STATE_KEY)


@dataclass
class RebaseResult:
    checkout: Checkout
    old_version: str
    new_version: str
    outcomes: list[dict]
    stopped: dict | None = None  # {name, status, files: [{path, kind, hunks}], details}
    series_dir: Path | None = None
    range_diff: str | None = None
    evidence: dict | None = None
    pinned: bool = False  # NEW's pin was written by this rebase
    dropped: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.stopped is None

    def as_dict(self) -> dict:
        return {
            "old_version": self.old_version,
            "new_version": self.new_version,
            "checkout": str(self.checkout.path),
            "done": self.done,
            "patches": self.outcomes,
            "stopped": self.stopped,
            "series": str(self.series_dir) if self.series_dir else None,
            "pinned": self.pinned,
            "dropped": self.dropped,
            "range_diff": self.range_diff,
            "evidence": self.evidence,
        }


# ---------------------------------------------------------------- starting


def prepare_target(target: Path, *, force: bool) -> None:
    """Make room for a rebase checkout at `target`, removing only a vpatch checkout with nothing to lose."""
    if not target.exists() or not any(target.iterdir()):
        return
    if not (target / ".git" / "vpatch.json").is_file():
        raise VpatchError(f"{target} already exists and is not a vpatch checkout; choose another --into")
    if rebase_state(target) is not None:
        raise VpatchError(
            f"{target}: a rebase is in progress there; `vpatch rebase --continue`, `--skip` or `--abort` it first"
        )
    repo = Git(target)
    pristine = repo.rev_parse("HEAD") == repo.rev_parse(UPSTREAM_REF) and not repo.out("status", "--porcelain")
    if not (pristine or force):
        raise VpatchError(f"{target} already exists (a checkout with commits or changes); use --force to replace it")
    shutil.rmtree(target)


def start_rebase(
    project: Project,
    old_pin: Pin,
    new_pin: Pin,
    *,
    target: Path,
    force: bool = False,
    pending_pin: bool = False,
    step: Step = _no_step,
) -> RebaseResult:
    """Replay OLD's series onto NEW's base in a new checkout at `target`.

    `pending_pin` means NEW is not in pins.toml yet: its pin is written only when the rebase completes.
    """
    if old_pin.version == new_pin.version:
        raise VpatchError(f"{old_pin.label}: rebase onto the same version makes no sense")
    old_series = project.series(old_pin)
    series_dir = project.options.patches_dir / new_pin.series_dirname
    if (series_dir / "series").exists() and not force:
        raise VpatchError(f"{series_dir} already has a series; use --force to replace it with the rebased one")
    prepare_target(target, force=force)
    with step(f"bases {old_pin.label} ({old_pin.source}) and {new_pin.label} ({new_pin.source})"):
        old_base = project.base(old_pin)
        new_base = materialize(new_pin, project.options.cache_dir, quiet=project.options.json)
    # Only the files the series touches are written (`git sparse-checkout disable` fills in the rest):
    # resolving a conflict needs no other file, and writing the whole tree was most of a rebase's time.
    touched = tuple(sorted({path for patch in old_series.patches for path in patch.touched_paths}))
    with step(f"checkout of {new_pin.label} into {target} ({len(touched)} files the series touches)"):
        checkout = create_checkout(new_base, target, sparse_paths=touched)
    try:
        with step(f"borrow {old_pin.label}'s base for three-way merges; enable rerere"):
            # Borrowed from the cache, not copied: a rebase checkout is a working area.
            add_base_objects(checkout, [old_base], borrow=True)
            checkout.git.update_ref(OLD_BASE_REF, old_base.commit)
            _enable_rerere(checkout, rerere_cache(project.options.cache_dir, project.pins.project))
        private = _private_dir(checkout)
        (private / "patches").mkdir(parents=True)
        for patch in old_series.patches:
            (private / "patches" / patch.name).write_bytes(patch.data)
        (private / "series").write_text(old_series.text, encoding="utf-8")
        old_evidence = old_series.directory / EVIDENCE_FILE
        if old_evidence.is_file():
            shutil.copyfile(old_evidence, private / EVIDENCE_FILE)
        if pending_pin:
            write_pin(private / "pin.toml", new_pin)
        # The old series as commits on OLD's base is only needed for the range-diff: made meanwhile, in
        # its own index, while the replay runs (a second core halves the wait).
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vpatch-old-series")
        old_head = pool.submit(old_series_head, project, old_pin, old_series, old_base, checkout)
        pool.shutdown(wait=False)
        retired = {p.name: retired_since(p, new_pin) for p in old_series.patches}
        state = {
            "old_version": str(old_pin.version),
            "new_version": str(new_pin.version),
            "old_base": old_base.commit,
            "old_head": None,  # set when the old series' commits are made (see _Rebase.settle_old_head)
            "old_head_made": False,
            "patches": [p.name for p in old_series.patches],
            "remaining": [p.name for p in old_series.patches if retired[p.name] is None],
            # Retired for NEW already: not replayed, recorded with the retirement's own evidence.
            "outcomes": [
                {"name": p.name, "subject": p.subject, "status": RETIRED, "details": [retired[p.name]], "commit": None}
                for p in old_series.patches
                if retired[p.name] is not None
            ],
            "current": None,
            "stopped": None,
            "force": force,
            "pending_pin": pending_pin,
        }
        update_state(checkout, {STATE_KEY: state})
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    rebase = _Rebase(project, checkout, state)
    rebase.old_head_future = old_head
    with step(f"replay {len(old_series.patches)} patch(es) onto {new_pin.label}"):
        return rebase.replay()


def retired_since(patch: Patch, new_pin: Pin) -> str | None:
    """Why the patch is not replayed onto NEW (its `Retired-Since:` is NEW or earlier), or None."""
    since = patch.header("Retired-Since")
    if not since:
        return None
    try:
        if Version(since) > new_pin.version:
            return None
    except InvalidVersion:
        raise VpatchError(f"Retired-Since: {since!r} is not a version", path=patch.path) from None
    return f"retired since {since}: {patch.header('Retired-Evidence') or 'no evidence recorded'}"


def _private_dir(checkout: Checkout) -> Path:
    return checkout.git.git_dir() / PRIVATE_DIR


def _enable_rerere(checkout: Checkout, shared: Path) -> None:
    shared.mkdir(parents=True, exist_ok=True)
    link = checkout.git.git_dir() / "rr-cache"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(shared.resolve(), target_is_directory=True)
    checkout.git.run("config", "rerere.enabled", "true")


def old_series_head(project: Project, old_pin: Pin, series: Series, old_base: Base, checkout: Checkout) -> str | None:
    """The old series as commits on OLD's base, made in the checkout's repository without a work tree; None
    if it does not apply there with zero fuzz. OLD's base objects must be in the checkout (add_base_objects)."""
    head = series_commits(checkout.git, old_base.commit, series.patches)
    if head is not None:
        checkout.git.update_ref(OLD_HEAD_REF, head)
    return head


def series_commits(repo: Git, base_commit: str, patches: Sequence[Patch]) -> str | None:
    """Commit each patch of the series on `base_commit` through a temporary index (`git apply --cached`,
    messages and authors as `git am --keep-non-patch` takes them); the last commit, or None when a patch
    does not apply."""
    head = base_commit
    with tempfile.TemporaryDirectory(prefix="vpatch-series-", dir=repo.git_dir()) as tmp:
        index = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        repo.run("read-tree", base_commit, env=index)
        for patch in patches:
            if repo.run("apply", "--cached", str(patch.path), env=index, check=False).returncode != 0:
                return None
            msg, body = Path(tmp) / "msg", Path(tmp) / "body"
            info = repo.run("mailinfo", "-b", str(msg), str(body), input=patch.data).stdout.decode("utf-8", "replace")
            fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
            message = fields.get("Subject", "") + "\n\n" + msg.read_text(encoding="utf-8", errors="replace")
            author = {
                "GIT_AUTHOR_NAME": fields.get("Author", ""),
                "GIT_AUTHOR_EMAIL": fields.get("Email", ""),
                "GIT_AUTHOR_DATE": fields.get("Date", ""),
                "GIT_COMMITTER_DATE": fields.get("Date", ""),
            }
            tree = repo.out("write-tree", env=index)
            head = (
                repo.run("commit-tree", tree, "-p", head, input=message.encode(), env={**index, **author})
                .stdout.decode()
                .strip()
            )
    return head


# ---------------------------------------------------------------- resuming


def continue_rebase(project: Project, checkout: Checkout, *, force: bool = False) -> RebaseResult:
    """Go on after the stopped patch was resolved (edited and `git add`ed) in the checkout."""
    rebase = _Rebase.load(project, checkout)
    rebase.state["force"] = rebase.state.get("force", False) or force
    name = rebase.state["current"]
    if name is not None:
        stopped = rebase.state.get("stopped") or {}
        repo = checkout.git
        committed = len(repo.commits(f"{UPSTREAM_REF}..HEAD")) > rebase.state["current_start"]
        if am_in_progress(checkout) and committed:
            # Resolved and committed with git while `git am` still waited (e.g. to reword the message):
            # the commit is the patch; end the am session without touching it.
            repo.run("am", "--skip")
            rebase.settle(name, MERGED, ["resolved by hand (committed with git)"], repo.rev_parse("HEAD"))
        elif am_in_progress(checkout):
            unmerged = [path for _, path in rebase.unmerged()]
            if unmerged:
                raise VpatchError(
                    f"{checkout.path}: still unmerged: {', '.join(unmerged)}; resolve, `git add`, then continue"
                )
            for entry in stopped.get("files", []):
                hunks = conflict_hunks(checkout.path / entry["path"])
                if hunks:
                    raise VpatchError(
                        f"conflict markers remain at {_ranges(hunks)}; resolve them, `git add`, then continue",
                        path=checkout.path / entry["path"],
                    )
            if stopped.get("status") == FAILED and repo.ok("diff", "--cached", "--quiet", "HEAD"):
                raise VpatchError(
                    f"{checkout.path}: nothing is staged for {name}; make its change by hand and `git add` it, "
                    "or `vpatch rebase --skip` to drop it"
                )
            how = "conflict resolved by hand" if stopped.get("status") == CONFLICT else "applied by hand"
            rebase.state["continuing"] = how  # a run killed once `git am --continue` committed still says how
            rebase.save()
            rebase.continue_am(name, how)
        elif committed:
            how = rebase.state.get("continuing") or "resolved by hand (committed with git)"
            rebase.settle(name, MERGED, [how], repo.rev_parse("HEAD"))
        else:
            rebase.settle(name, SKIPPED, ["skipped with git"])
    return rebase.replay()


def skip_patch(project: Project, checkout: Checkout) -> RebaseResult:
    """Drop the stopped patch from the new series and go on with the rest."""
    rebase = _Rebase.load(project, checkout)
    name = rebase.state["current"]
    if name is None:
        raise VpatchError(f"{checkout.path}: no patch is stopped; nothing to skip")
    if am_in_progress(checkout):
        checkout.git.run("am", "--skip")
    checkout.git.run("reset", "--quiet", "--hard", rebase.state["current_head"])
    rebase.settle(name, SKIPPED, ["dropped by hand (vpatch rebase --skip)"])
    return rebase.replay()


def abort_rebase(project: Project, checkout: Checkout) -> dict:
    """Give up: the checkout goes back to NEW's base, patches/ was never written. Returns the dropped state."""
    state = rebase_state(checkout.path)
    if state is None:
        raise VpatchError(f"{checkout.path}: no rebase is in progress")
    repo = checkout.git
    if am_in_progress(checkout):
        # Remember what was resolved so far (a resolved file without markers), so the next rebase reuses it.
        repo.run("rerere", check=False)
        repo.run("am", "--abort")
    repo.run("reset", "--quiet", "--hard", UPSTREAM_REF)
    for ref in (OLD_HEAD_REF, OLD_BASE_REF):
        repo.run("update-ref", "-d", ref, check=False)
    shutil.rmtree(_private_dir(checkout), ignore_errors=True)
    write_state(checkout, {})
    return state


# ---------------------------------------------------------------- the replay


class _Rebase:
    def __init__(self, project: Project, checkout: Checkout, state: dict) -> None:
        self.project = project
        self.checkout = checkout
        self.repo = checkout.git
        self.state = state
        self.private = _private_dir(checkout)
        self.old_head_future: Future[str | None] | None = None

    def settle_old_head(self) -> None:
        """Wait for the old series' commits (made beside the replay) and record where they end."""
        future, self.old_head_future = self.old_head_future, None
        if future is not None:
            self.state["old_head"] = future.result()
            self.state["old_head_made"] = True
            self.save()
        elif not self.state.get("old_head_made", True):
            # The run that started the rebase was killed before its thread made them: make them now.
            patches = [self.patch(name) for name in self.state["patches"]]
            head = series_commits(self.repo, self.state["old_base"], patches)
            if head is not None:
                self.repo.update_ref(OLD_HEAD_REF, head)
            self.state["old_head"] = head
            self.state["old_head_made"] = True
            self.save()

    @classmethod
    def load(cls, project: Project, checkout: Checkout) -> _Rebase:
        state = rebase_state(checkout.path)
        if state is None:
            raise VpatchError(f"{checkout.path}: no rebase is in progress")
        rebase = cls(project, checkout, state)
        rebase.redo_interrupted_am()
        return rebase

    def redo_interrupted_am(self) -> None:
        """A run killed while its `git am` worked (or before the outcome was saved) left commits or an am
        session the state does not know: go back to where that `git am` started; the replay redoes it."""
        start = self.state.get("am_from")
        if start is None:
            return
        if am_in_progress(self.checkout):
            self.repo.run("am", "--quit")
        self.repo.run("reset", "--quiet", "--hard", start)
        current = self.state["current"]
        if current is not None and not self.state.get("stopped"):
            self.state["remaining"].insert(0, current)
            self.state["current"] = None
        del self.state["am_from"]
        self.save()
        ui.err.print(f"vpatch: the replay killed inside `git am` is redone from {start[:12]}")

    def save(self) -> None:
        update_state(self.checkout, {STATE_KEY: self.state})

    def patch_path(self, name: str) -> Path:
        return self.private / "patches" / name

    def patch(self, name: str) -> Patch:
        return parse_patch(self.patch_path(name))

    def count(self) -> int:
        return len(self.repo.commits(f"{UPSTREAM_REF}..HEAD"))

    def settle(
        self, name: str, status: str, details: list[str], commit: str | None = None, *, save: bool = True
    ) -> None:
        self.state["outcomes"].append(
            {"name": name, "subject": self.patch(name).subject, "status": status, "details": details, "commit": commit}
        )
        self.state["current"] = None
        self.state["stopped"] = None
        self.state.pop("continuing", None)
        if save:  # a batch saves once, when all its patches are settled (a kill between would lose commits)
            self.state.pop("am_from", None)
            self.save()

    def unmerged(self) -> list[tuple[str, str]]:
        """(status code, path) of every unmerged path (`git status` XY codes: UU, AA, DU, UD ...)."""
        raw = self.repo.run("status", "--porcelain", "-z", "--untracked-files=no").stdout.decode("utf-8", "replace")
        entries = []
        for item in raw.split("\0"):
            code, path = item[:2], item[3:]
            if code in ("DD", "AU", "UD", "UA", "DU", "AA", "UU"):
                entries.append((code, path))
        return entries

    def replay(self) -> RebaseResult:
        while self.state["remaining"]:
            if len(self.state["remaining"]) > 1 and self.replay_batch():
                continue
            name = self.state["remaining"].pop(0)
            self.state["current"] = name
            self.state["current_start"] = self.count()
            self.state["current_head"] = self.repo.rev_parse("HEAD")
            self.state["am_from"] = self.state["current_head"]  # until the outcome is saved
            self.save()
            proc = self.repo.run(*AM_ARGS, "--3way", str(self.patch_path(name)), check=False)
            faults.reached("rebase.am")
            output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
            if proc.returncode == 0:
                self.settle_applied(name, [THREE_WAY_NOTE] if THREE_WAY_NOTE in output else [])
                continue
            stop = self.after_stop(name, output)
            if stop is not None:
                self.state["stopped"] = stop
                self.state.pop("am_from", None)
                self.save()
                return self.result()
        return self.finish()

    def replay_batch(self) -> bool:
        """Replay all remaining patches with one `git am` (most patches of a release apply as they are) and
        settle the ones it applied; False when it applied none. A patch it stops at is not settled: its
        attempt is dropped (the commits before it stay) and the one-patch path replays it, so a stop is
        always a one-patch `git am` session a person can resolve."""
        names = list(self.state["remaining"])
        start = self.repo.rev_parse("HEAD")
        assert start is not None
        self.state["am_from"] = start  # until the outcomes are saved
        self.save()
        proc = self.repo.run(*AM_ARGS, "--3way", *(str(self.patch_path(n)) for n in names), check=False)
        faults.reached("rebase.am")
        sections = _am_sections((proc.stdout + proc.stderr).decode("utf-8", "replace"))
        if proc.returncode != 0:
            if not am_in_progress(self.checkout):
                return False  # not a stop `git am` explains; the one-patch path reports it
            self.repo.run("am", "--quit")
            self.repo.run("reset", "--quiet", "--hard", "HEAD")
            sections = sections[:-1]  # the stopped patch
        commits = iter(self.repo.commits(f"{start}..HEAD"))
        for name, section in zip(names, sections, strict=False):
            self.state["remaining"].remove(name)
            if "No changes -- Patch already applied" in section:
                self.settle(name, EMPTY, [BECAME_EMPTY], save=False)
            elif THREE_WAY_NOTE in section:
                self.settle(name, MERGED, ["applied with a three-way merge"], next(commits), save=False)
            else:
                self.settle(name, CLEAN, [], next(commits), save=False)
        del self.state["am_from"]
        self.save()
        return bool(sections)

    def settle_applied(self, name: str, notes: list[str]) -> None:
        """The current patch's `git am` succeeded: a commit (clean or merged), or nothing (empty)."""
        if self.count() > self.state["current_start"]:
            merged = bool(notes)
            details = [n if n != THREE_WAY_NOTE else "applied with a three-way merge" for n in notes]
            self.settle(name, MERGED if merged else CLEAN, details, self.repo.rev_parse("HEAD"))
        else:
            self.settle(name, EMPTY, [BECAME_EMPTY])

    def after_stop(self, name: str, output: str) -> dict | None:
        """`git am` stopped on `name`: settle it if rerere resolved every conflict, else describe the stop."""
        if not am_in_progress(self.checkout):
            lines = [line for line in output.splitlines() if line.strip()]
            raise VpatchError(f"{name}: git am failed: {lines[-1] if lines else 'no output'}")
        unmerged = self.unmerged()
        if unmerged:
            unresolved = set(self.repo.out("rerere", "remaining").splitlines())
            auto = [
                path
                for _, path in unmerged
                if path not in unresolved
                and (self.checkout.path / path).is_file()
                and not conflict_hunks(self.checkout.path / path)
            ]
            if auto:
                self.repo.run("add", "--", *auto)
            note = f"conflict in {', '.join(auto)} resolved by a recorded resolution (rerere)" if auto else ""
            if len(auto) == len(unmerged):
                self.continue_am(name, note)
                return None
            files: list[dict] = [
                {
                    "path": path,
                    "kind": _CONFLICT_KINDS.get(code, code),
                    "hunks": conflict_hunks(self.checkout.path / path),
                }
                for code, path in unmerged
                if path not in auto
            ]
            details = [
                f"{f['path']}: {f['kind']}" + (f" at {_ranges(f['hunks'])}" if f["hunks"] else "") for f in files
            ]
            return {"name": name, "status": CONFLICT, "files": files, "details": details + ([note] if note else [])}
        check = self.repo.run("apply", "--check", "-v", str(self.patch_path(name)), check=False)
        details = list(describe_apply_failure(self.patch(name), check.stderr.decode("utf-8", "replace")))
        why = [line for line in output.splitlines() if line.startswith(("error:", "fatal:"))]
        details += [line for line in why if "Failed to merge" not in line and line not in details]
        return {"name": name, "status": FAILED, "files": [], "details": details}

    def continue_am(self, name: str, note: str) -> None:
        proc = self.repo.run("am", "--continue", check=False)
        faults.reached("rebase.am")
        output = (proc.stdout + proc.stderr).decode("utf-8", "replace")
        if proc.returncode == 0:
            self.settle_applied(name, [note])
            return
        if "No changes" in output:
            # Resolved to exactly what the new base has: nothing left of this patch.
            self.repo.run("am", "--skip")
            self.settle(name, EMPTY, [f"{note}; {BECAME_EMPTY}"])
            return
        lines = [line for line in output.splitlines() if line.strip()]
        raise VpatchError(f"{name}: git am --continue failed: {lines[-1] if lines else 'no output'}")

    def result(self) -> RebaseResult:
        self.settle_old_head()
        outcomes = list(self.state["outcomes"])
        stopped = self.state.get("stopped")
        if stopped:
            outcomes.append(
                {
                    "name": stopped["name"],
                    "subject": self.patch(stopped["name"]).subject,
                    "status": stopped["status"],
                    "details": stopped["details"],
                    "commit": None,
                }
            )
        for name in self.state["remaining"]:
            outcomes.append(
                {"name": name, "subject": self.patch(name).subject, "status": PENDING, "details": [], "commit": None}
            )
        return RebaseResult(
            self.checkout, self.state["old_version"], self.state["new_version"], outcomes, stopped=stopped
        )

    # ------------------------------------------------------------ completing

    def new_pin(self) -> Pin:
        pins = self.project.pins
        if not self.state["pending_pin"]:
            return pins.get(self.state["new_version"])
        return load_pins(self.private / "pin.toml").get(self.state["new_version"])

    def finish(self) -> RebaseResult:
        state = self.state
        options = self.project.options
        old_pin = self.project.pins.get(state["old_version"])
        new_pin = self.new_pin()
        series_dir = options.patches_dir / new_pin.series_dirname
        if (series_dir / "series").exists() and not state["force"]:
            raise VpatchError(
                f"{series_dir} already has a series (written since the rebase started); "
                "`vpatch rebase --continue --force` replaces it"
            )
        kept = [o for o in state["outcomes"] if o["status"] in KEPT]
        commits = self.repo.commits(f"{UPSTREAM_REF}..HEAD")
        if len(commits) != len(kept):
            raise VpatchError(
                f"{self.checkout.path}: {len(commits)} commits above {UPSTREAM_REF}, but the rebase kept "
                f"{len(kept)} patches; put the branch back (or `vpatch rebase --abort`)"
            )
        mails, changed = self.final_mails(kept)
        old_patches = [self.patch(name) for name in state["patches"]]
        old_base = self.project.base(old_pin)
        new_base = materialize(new_pin, options.cache_dir, quiet=options.json)
        new_head = self.repo.rev_parse("HEAD")
        assert new_head is not None
        # The evidence (a git run per patch) is gathered beside the range-diff, which may still wait for
        # the old series' commits.
        with ThreadPoolExecutor(max_workers=1) as pool:
            evidence_job = pool.submit(
                collect_evidence,
                self.repo,
                project=new_pin.project,
                old_base=old_base,
                new_base=new_base,
                patches=old_patches,
                outcomes=state["outcomes"],
                content_changed=changed,
                earlier=self.earlier(),
                conformance=conformance_evidence(
                    against_results(options.root, new_pin, patches_dir=options.patches_dir)
                ),
            )
            self.settle_old_head()
            review = range_diff(self.repo, state["old_base"], state["old_head"], self.checkout.base_commit, new_head)
            evidence = evidence_job.result()
        for name, data in mails:
            # What the rebase wrote, so `vpatch review` can tell later hand edits apart.
            evidence["patches"][name]["new_patch_id"] = patch_id(self.repo, data)
        old_text = (self.private / "series").read_text(encoding="utf-8")
        names = [name for name, _ in mails]
        series_text = old_text if names == state["patches"] else _series_text(old_text, names)
        series_text = retarget_comments(series_text, state["old_version"], state["new_version"])
        pinned = self.write_pin(new_pin)
        retired = [(o["name"], self.patch(o["name"]).data) for o in state["outcomes"] if o["status"] == RETIRED]
        # The checkout's state leaves "rebasing" in the same transaction as the series is written: a kill
        # leaves the rebase to continue or the rebase done, never a series with the rebase still pending.
        done = self.checkout.git.git_dir() / STATE_FILE
        done_state = state_text(self.checkout, {"rebased_from": state["old_version"]}).encode()
        write_series(series_dir, mails, series_text, evidence, review, retired=retired, also={done: done_state})
        outcomes = state["outcomes"]
        for outcome in outcomes:
            if outcome["status"] in KEPT:
                outcome["content_changed"] = changed[outcome["name"]]
        dropped = [o["name"] for o in outcomes if o["status"] not in KEPT]
        shutil.rmtree(self.private, ignore_errors=True)
        return RebaseResult(
            self.checkout,
            state["old_version"],
            state["new_version"],
            outcomes,
            series_dir=series_dir,
            range_diff=review,
            evidence=evidence,
            pinned=pinned,
            dropped=dropped,
        )

    def earlier(self) -> list[dict]:
        """What the old series' own evidence.json says was dropped before (unreadable: nothing)."""
        path = self.private / EVIDENCE_FILE
        try:
            old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
            return carried_forward(old) if isinstance(old, dict) else []
        except (OSError, ValueError, AttributeError, TypeError):
            return []

    def final_mails(self, kept: list[dict]) -> tuple[list[tuple[str, bytes]], dict[str, bool]]:
        """The new series' mails; `Last-Update:` refreshed where the change itself differs from the old patch.

        "Differs" means a different `git patch-id --stable`: moved hunks and new blob ids are not a change,
        a three-way merge or a resolution that altered the diff is. When any message changes, the branch is
        rebuilt from the final mails, so the checkout and the written series are the same thing.
        """
        rendered = render_range(self.repo, UPSTREAM_REF, "HEAD")
        date = today()
        mails: list[tuple[str, bytes]] = []
        changed: dict[str, bool] = {}
        # Every patch-id this needs (and the evidence after it), in one git run.
        patch_ids(self.repo, [self.patch(o["name"]).data for o in kept] + [m.data for m in rendered])
        for outcome, mail in zip(kept, rendered, strict=True):
            name = outcome["name"]
            old = self.patch(name)
            data = mail.data
            if parse_patch(self.private / name, data).header("Patch-File") is None:
                data = set_patch_file_header(data, name)
            changed[name] = patch_id(self.repo, old.data) != patch_id(self.repo, data)
            if changed[name]:
                data = set_trailer(data, "Last-Update", date)
            mails.append((name, data))
        if all(data == mail.data for (_, data), mail in zip(mails, rendered, strict=True)):
            return mails, changed
        final = self.private / "final"
        final.mkdir(exist_ok=True)
        paths = []
        for number, (_name, data) in enumerate(mails, start=1):
            path = final / f"{number:04d}.patch"
            path.write_bytes(data)
            paths.append(str(path))
        self.repo.run("reset", "--quiet", "--hard", UPSTREAM_REF)
        self.repo.run(*AM_ARGS, *paths)
        rerendered = render_range(self.repo, UPSTREAM_REF, "HEAD")
        for outcome, mail in zip(kept, rerendered, strict=True):
            outcome["commit"] = mail.commit
        return [(name, mail.data) for (name, _), mail in zip(mails, rerendered, strict=True)], changed

    def write_pin(self, new_pin: Pin) -> bool:
        """Write NEW's pin if the rebase pinned it; True when it did."""
        if not self.state["pending_pin"]:
            return False
        pins_file = self.project.options.pins_file
        # Under the project lock: a pin of NEW written meanwhile (by `pin add`) is kept, not overwritten.
        existing = write_pin(pins_file, new_pin, replace=False)
        if existing is None:
            return True
        base = materialize(existing, self.project.options.cache_dir, quiet=self.project.options.json)
        if base.commit != self.checkout.base_commit:
            raise VpatchError(
                f"{new_pin.label} was pinned since the rebase started, with another base ({base.commit[:12]})",
                path=pins_file,
            )
        return False


def write_series(
    directory: Path,
    mails: list[tuple[str, bytes]],
    series_text: str,
    evidence: dict,
    range_diff: str,
    *,
    retired: Sequence[tuple[str, bytes]] = (),
    also: Mapping[Path, bytes] | None = None,
) -> None:
    """The new series directory (and the files in `also`), staged beside their places, swapped in as one transaction.

    Files vpatch writes in a series directory (patches, series, evidence, range diff, retired/) come
    from the rebase alone; anything else already there (a hand-written NOTES.md) is carried over.
    `retired`: patches not replayed because they were retired for this release; kept under `retired/`
    as `vpatch retire` keeps them.
    """
    files = {name: data for name, data in mails}
    files.update({f"retired/{name}": data for name, data in retired})
    files["series"] = series_text.encode("utf-8")
    files[EVIDENCE_FILE] = (json.dumps(evidence, indent=1, sort_keys=True) + "\n").encode("utf-8")
    files[RANGE_DIFF_FILE] = range_diff.encode("utf-8")
    with transaction(directory.parent, f"rebase onto {directory.name}") as txn:
        txn.stage_series(directory, files, keep_old=False)
        for path, data in (also or {}).items():
            txn.stage_file(path, data)
        txn.commit()


# ---------------------------------------------------------------- helpers


def retarget_comments(series_text: str, old_version: str, new_version: str) -> str:
    """The old series file's comments, with "vLLM OLD" now naming NEW (patch lines untouched)."""
    # "vLLM 1.0" but not "vLLM 1.0x" or "vLLM 1.0.1".
    old_name = re.compile(rf"vLLM {re.escape(old_version)}(?!\w|\.\d)")
    lines = series_text.splitlines(keepends=True)
    return "".join(
        old_name.sub(f"vLLM {new_version}", line) if line.lstrip().startswith("#") else line for line in lines
    )


def _am_sections(output: str) -> list[str]:
    """`git am` output split per patch (each section starts at its "Applying: " line)."""
    sections: list[str] = []
    for line in output.splitlines():
        if line.startswith("Applying: "):
            sections.append("")
        if sections:
            sections[-1] += line + "\n"
    return sections


def range_diff(repo: Git, old_base: str, old_head: str | None, new_base: str, new_head: str) -> str:
    """`git range-diff` of the old series (on OLD's base) against the new one (on NEW's)."""
    if old_head is None:
        return "not available: the old series does not apply to its own base with zero fuzz\n"
    old_commits = repo.commits(f"{old_base}..{old_head}")
    new_commits = repo.commits(f"{new_base}..{new_head}")
    if old_commits and new_commits:
        return repo.run("range-diff", "--no-color", f"{old_base}..{old_head}", f"{new_base}..{new_head}").stdout.decode(
            "utf-8", "replace"
        )
    # git range-diff refuses an empty range; list the commits the way it would.
    lines = []
    for number, commit in enumerate(old_commits, start=1):
        short, subject = repo.out("log", "-1", "--format=%h%x00%s", commit).split("\0", 1)
        lines.append(f"{number}:  {short} < -:  {'-' * len(short)} {subject}")
    for number, commit in enumerate(new_commits, start=1):
        short, subject = repo.out("log", "-1", "--format=%h%x00%s", commit).split("\0", 1)
        lines.append(f"-:  {'-' * len(short)} > {number}:  {short} {subject}")
    return "".join(line + "\n" for line in lines)


_CONFLICT_KINDS = {
    "UU": "content conflict",
    "AA": "added on both sides",
    "DU": "deleted in the new base, changed by the patch",
    "UD": "changed in the new base, deleted by the patch",
    "AU": "added by the new base",
    "UA": "added by the patch",
    "DD": "deleted on both sides",
}


def conflict_hunks(path: Path) -> list[list[int]]:
    """[first, last] line of every `<<<<<<<` ... `>>>>>>>` block in the file."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return []
    hunks, start = [], None
    for number, line in enumerate(lines, start=1):
        if start is None and line.startswith(b"<<<<<<<"):
            start = number
        elif start is not None and line.startswith(b">>>>>>>"):
            hunks.append([start, number])
            start = None
    return hunks


def _ranges(hunks: list[list[int]]) -> str:
    return "lines " + ", ".join(f"{a}-{b}" for a, b in hunks)


def today() -> str:
    """YYYY-MM-DD for `Last-Update:`, from SOURCE_DATE_EPOCH when set (reproducible), else now (UTC)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
        if epoch.isdigit()
        else datetime.datetime.now(datetime.UTC)
    )
    return when.date().isoformat()


_TRAILER_LINE = re.compile(rb"^(?:[A-Za-z][A-Za-z0-9-]*:(?: |$)|[ \t])")


def set_trailer(data: bytes, key: str, value: str) -> bytes:
    """Set `Key: value` in the mail's header paragraph (the last of the message): replaced in place, or
    added before `Patch-File:` (which stays last), or as a new paragraph when the message has none."""
    mail_headers, _, body = data.partition(b"\n\n")
    separator = re.search(rb"^(---\n|diff --git )", body, re.M)
    cut = separator.start() if separator else len(body)
    message, rest = body[:cut].rstrip(b"\n"), body[cut:]
    line = f"{key}: {value}".encode()
    paragraphs = message.split(b"\n\n") if message else []
    if paragraphs and all(_TRAILER_LINE.match(ln) for ln in paragraphs[-1].split(b"\n")):
        lines = paragraphs[-1].split(b"\n")
        prefix = key.lower().encode() + b":"
        at = next((i for i, ln in enumerate(lines) if ln.lower().startswith(prefix)), None)
        if at is not None:
            end = at + 1
            while end < len(lines) and lines[end][:1] in (b" ", b"\t"):
                end += 1  # a folded value goes with its key
            lines[at:end] = [line]
        else:
            at = next((i for i, ln in enumerate(lines) if ln.lower().startswith(b"patch-file:")), len(lines))
            lines.insert(at, line)
        paragraphs[-1] = b"\n".join(lines)
    else:
        paragraphs.append(line)
    return mail_headers + b"\n\n" + b"\n\n".join(paragraphs) + b"\n" + rest
