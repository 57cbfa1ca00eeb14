"""Starting, continuing, skipping and aborting a rebase: the entry points `vpatch rebase` calls."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

from packaging.version import InvalidVersion, Version

from toolkit.apply import am_in_progress
from toolkit.checkout import UPSTREAM_REF, Checkout, add_base_objects, create_checkout, write_state
from toolkit.errors import VpatchError
from toolkit.git import Git
from toolkit.lifecycle.rebase import reuse
from toolkit.lifecycle.rebase.complete import finish
from toolkit.lifecycle.rebase.conflicts import conflict_hunks, line_ranges, unmerged_paths
from toolkit.lifecycle.rebase.recipes import enable_rerere, old_series_head, rerere_cache
from toolkit.lifecycle.rebase.replay import Replay
from toolkit.lifecycle.rebase.resolutions import read_dir as read_resolutions
from toolkit.lifecycle.rebase.state import (
    OLD_BASE_REF,
    OLD_HEAD_REF,
    PatchResult,
    RebaseResult,
    RebaseState,
    Stop,
    private_dir,
    rebase_state,
    save_state,
)
from toolkit.model import Patch, Pin
from toolkit.pins import write_pin
from toolkit.project import Project
from toolkit.records.evidence import EVIDENCE_FILE
from toolkit.records.outcome import Outcome
from toolkit.records.resolutions import RESOLUTIONS_DIR
from toolkit.sources import materialize

Step = Callable[[str], AbstractContextManager]


def _no_step(_title: str) -> AbstractContextManager:
    return contextlib.nullcontext()


def replay_and_finish(rebase: Replay) -> RebaseResult:
    """Replay the rest of the series; complete the rebase unless a patch stops it."""
    return rebase.replay() or finish(rebase)


def default_rebase_dir(project: Project, new_pin: Pin) -> Path:
    return project.options.checkouts_dir / f"{new_pin.series_dirname}-rebase"


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
    pristine = repo.rev_parse("HEAD") == repo.rev_parse(UPSTREAM_REF) and not repo.status()
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
    reuse: bool = True,
    beside: bool = False,
    step: Step = _no_step,
) -> RebaseResult:
    """Replay OLD's series onto NEW's base in a new checkout at `target`.

    `pending_pin` means NEW is not in pins.toml yet: its pin is written only when the rebase completes.
    """
    if old_pin.version == new_pin.version:
        raise VpatchError(f"{old_pin.label}: rebase onto the same version makes no sense")
    old_series = project.series(old_pin)
    series_dir = project.options.patches_dir / new_pin.series_dirname
    if (series_dir / "series").exists() and not (force or beside):
        raise VpatchError(f"{series_dir} already has a series; use --force to replace it with the rebased one")
    if reuse:  # refused before anything is made: a path escaping the tree, a file not matching the index
        read_resolutions(project.options.patches_dir / new_pin.series_dirname / RESOLUTIONS_DIR)
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
        with step(
            f"borrow {old_pin.label}'s base for three-way merges; " + ("enable rerere" if reuse else "rerere off")
        ):
            # Borrowed from the cache, not copied: a rebase checkout is a working area.
            add_base_objects(checkout, [old_base], borrow=True)
            checkout.git.update_ref(OLD_BASE_REF, old_base.commit)
            store = rerere_cache(project.options.cache_dir, project.pins.project, project.options.root)
            enable_rerere(checkout, store, reuse=reuse)
        private = private_dir(checkout)
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
        state = RebaseState(
            old_version=str(old_pin.version),
            new_version=str(new_pin.version),
            old_base=old_base.commit,
            old_head=None,  # set when the old series' commits are made (see Replay.settle_old_head)
            old_head_made=False,
            patches=[p.name for p in old_series.patches],
            remaining=[p.name for p in old_series.patches if retired[p.name] is None],
            # Retired for NEW already: not replayed, recorded with the retirement's own evidence.
            outcomes=[
                PatchResult(p.name, p.subject, Outcome.RETIRED, [reason], None)
                for p in old_series.patches
                if (reason := retired[p.name]) is not None
            ],
            current=None,
            stopped=None,
            force=force,
            pending_pin=pending_pin,
            no_reuse=None if reuse else True,
            beside=True if beside else None,
        )
        save_state(checkout, state)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    rebase = Replay(project, checkout, state)
    rebase.old_head_future = old_head
    with step(f"replay {len(old_series.patches)} patch(es) onto {new_pin.label}"):
        return replay_and_finish(rebase)


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


def continue_rebase(project: Project, checkout: Checkout, *, force: bool = False) -> RebaseResult:
    """Go on after the stopped patch was resolved (edited and `git add`ed) in the checkout."""
    rebase = Replay.load(project, checkout)
    rebase.state.force = bool(rebase.state.force) or force
    name = rebase.state.current
    conflicts = dict(rebase.state.rr_ids or {})  # indexed once git has recorded their resolutions
    release = f"{checkout.project} {rebase.state.new_version}"
    if name is not None:
        stopped = rebase.state.stopped
        stopped_status = stopped.status if stopped else None
        repo = checkout.git
        committed = len(repo.commits(f"{UPSTREAM_REF}..HEAD")) > (rebase.state.current_start or 0)
        if am_in_progress(checkout) and committed:
            # Resolved and committed with git while `git am` still waited (e.g. to reword the message):
            # the commit is the patch; end the am session without touching it.
            repo.am_skip()
            rebase.recorder.resolved(repo, "HEAD")
            rebase.settle(name, Outcome.MERGED, ["resolved by hand (committed with git)"], repo.rev_parse("HEAD"))
        elif am_in_progress(checkout) and stopped is not None and stopped.upstream_has_it and _untouched(repo):
            # "upstream has it", taken as offered: NEW's version stays, the patch leaves the series (empty).
            repo.am_skip()
            assert rebase.state.current_head is not None
            repo.reset_hard(rebase.state.current_head)
            kept = f"{release}'s version kept (vpatch rebase --continue)"
            rebase.settle(name, Outcome.EMPTY, [*_upstream_lines(stopped, release), kept])
        elif am_in_progress(checkout):
            unmerged = [path for _, path in unmerged_paths(repo)]
            if unmerged:
                raise VpatchError(
                    f"{checkout.path}: still unmerged: {', '.join(unmerged)}; resolve, `git add`, then continue"
                )
            for entry in stopped.files if stopped else []:
                hunks = conflict_hunks(checkout.path / entry.path)
                if hunks:
                    raise VpatchError(
                        f"conflict markers remain at {line_ranges(hunks)}; resolve them, `git add`, then continue",
                        path=checkout.path / entry.path,
                    )
            if stopped_status == Outcome.FAILED and repo.nothing_staged("HEAD"):
                raise VpatchError(
                    f"{checkout.path}: nothing is staged for {name}; make its change by hand and `git add` it, "
                    "or `vpatch rebase --skip` to drop it"
                )
            how = "conflict resolved by hand" if stopped_status == Outcome.CONFLICT else "applied by hand"
            if stopped is not None and stopped.upstream_has_it:
                how += " (" + "; ".join(_upstream_lines(stopped, release)) + ")"
            rebase.state.continuing = how  # a run killed once `git am --continue` committed still says how
            rebase.save()
            rebase.recorder.resolved(repo, "")  # the staged files are the resolution
            rebase.continue_am(name, how)
        elif committed:
            how = rebase.state.continuing or "resolved by hand (committed with git)"
            rebase.recorder.resolved(repo, "HEAD")
            rebase.settle(name, Outcome.MERGED, [how], repo.rev_parse("HEAD"))
        else:
            rebase.settle(name, Outcome.SKIPPED, ["skipped with git"])
        rebase.index_resolutions(conflicts, name)
    return replay_and_finish(rebase)


def stopped_patch(checkout: Checkout) -> str | None:
    """The patch a rebase in the checkout is stopped at, or None."""
    state = rebase_state(checkout.path)
    return state.current if state is not None else None


def skip_patch(project: Project, checkout: Checkout, reason: str) -> RebaseResult:
    """Drop the stopped patch from the new series, recording why, and go on with the rest."""
    if not reason.strip():
        raise VpatchError("--skip needs a reason (--reason TEXT): why the patch leaves the series")
    rebase = Replay.load(project, checkout)
    name = rebase.state.current
    if name is None:
        raise VpatchError(f"{checkout.path}: no patch is stopped; nothing to skip")
    stopped = rebase.state.stopped
    if am_in_progress(checkout):
        checkout.git.am_skip()
    assert rebase.state.current_head is not None  # set with `current`
    checkout.git.reset_hard(rebase.state.current_head)
    details = [f"dropped by hand (vpatch rebase --skip): {reason.strip()}"]
    if stopped is not None and stopped.upstream_has_it:
        details += _upstream_lines(stopped, f"{checkout.project} {rebase.state.new_version}")
    rebase.settle(name, Outcome.SKIPPED, details, reason=reason.strip())
    return replay_and_finish(rebase)


def _upstream_lines(stopped: Stop, release: str) -> list[str]:
    where = [h.describe(release) for h in stopped.upstream if h.found]
    return [f"upstream has it: {'; '.join(where)}"]


def _untouched(repo: Git) -> bool:
    """Nothing resolved yet: conflicts still unmerged, or nothing staged for the patch."""
    return bool(unmerged_paths(repo)) or repo.nothing_staged("HEAD")


def abort_rebase(project: Project, checkout: Checkout) -> RebaseState:
    """Give up: the checkout goes back to NEW's base, patches/ was never written. Returns the dropped state."""
    state = rebase_state(checkout.path)
    if state is None:
        raise VpatchError(f"{checkout.path}: no rebase is in progress")
    repo = checkout.git
    if am_in_progress(checkout):
        # Remember what was resolved so far (a resolved file without markers), so the next rebase reuses it.
        repo.rerere_record()
        if state.current and state.rr_ids:
            reuse.record(
                repo.git_dir() / "rr-cache",
                state.rr_ids,
                patch=state.current,
                rebase=f"{state.old_version} → {state.new_version}",
            )
        repo.am_abort()
    repo.reset_hard(UPSTREAM_REF)
    for ref in (OLD_HEAD_REF, OLD_BASE_REF):
        repo.delete_ref(ref)
    shutil.rmtree(private_dir(checkout), ignore_errors=True)
    write_state(checkout, {})
    return state
