"""The replay: the old series onto NEW's base one `git am --3way` at a time, as a state machine saved after
every step, so a run killed anywhere is continued by the next one.

Each patch ends up clean, merged (three-way, a recorded resolution, or by hand), empty (NEW already has
the change) or skipped. A conflict stops the replay with the `git am` session left in place.
"""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

from toolkit import faults, ui
from toolkit.apply import am_in_progress, describe_apply_failure
from toolkit.checkout import UPSTREAM_REF, Checkout
from toolkit.errors import VpatchError
from toolkit.git import ALREADY_APPLIED, THREE_WAY_NOTE, am_sections, fell_back_to_three_way
from toolkit.lifecycle.post_image import hunks_in_new
from toolkit.lifecycle.rebase import resolutions, reuse
from toolkit.lifecycle.rebase.conflicts import CONFLICT_KINDS, conflict_hunks, line_ranges, unmerged_paths
from toolkit.lifecycle.rebase.recipes import series_commits
from toolkit.lifecycle.rebase.state import (
    OLD_HEAD_REF,
    ConflictFile,
    PatchResult,
    RebaseResult,
    RebaseState,
    Stop,
    private_dir,
    rebase_state,
    save_state,
)
from toolkit.model import Patch, parse_patch
from toolkit.project import Project
from toolkit.records.outcome import Outcome

BECAME_EMPTY = "became empty: the new base already has this change"


class Replay:
    def __init__(self, project: Project, checkout: Checkout, state: RebaseState) -> None:
        self.project = project
        self.checkout = checkout
        self.repo = checkout.git
        self.state = state
        self.private = private_dir(checkout)
        self.old_head_future: Future[str | None] | None = None
        self.recorder = resolutions.Recorder(
            self.private, project=checkout.project, old_version=state.old_version, new_version=state.new_version
        )

    @property
    def tree_resolutions(self) -> Path:
        """NEW's committed series' resolutions (`patches/<project>-NEW/resolutions/`), replayed at a stop."""
        series = f"{self.checkout.project}-{self.state.new_version}"
        return self.project.options.patches_dir / series / resolutions.RESOLUTIONS_DIR

    @classmethod
    def load(cls, project: Project, checkout: Checkout) -> Replay:
        state = rebase_state(checkout.path)
        if state is None:
            raise VpatchError(f"{checkout.path}: no rebase is in progress")
        rebase = cls(project, checkout, state)
        rebase.redo_interrupted_am()
        return rebase

    def settle_old_head(self) -> None:
        """Wait for the old series' commits (made beside the replay) and record where they end."""
        future, self.old_head_future = self.old_head_future, None
        if future is not None:
            self.state.old_head = future.result()
            self.state.old_head_made = True
            self.save()
        elif self.state.old_head_made is False:
            # The run that started the rebase was killed before its thread made them: make them now.
            patches = [self.patch(name) for name in self.state.patches]
            head = series_commits(self.repo, self.state.old_base, patches)
            if head is not None:
                self.repo.update_ref(OLD_HEAD_REF, head)
            self.state.old_head = head
            self.state.old_head_made = True
            self.save()

    def redo_interrupted_am(self) -> None:
        """A run killed while its `git am` worked (or before the outcome was saved) left commits or an am
        session the state does not know: go back to where that `git am` started; the replay redoes it."""
        start = self.state.am_from
        if start is None:
            return
        if am_in_progress(self.checkout):
            self.repo.am_quit()
        self.repo.reset_hard(start)
        current = self.state.current
        if current is not None and not self.state.stopped:
            self.state.remaining.insert(0, current)
            self.state.current = None
        self.state.am_from = None
        self.save()
        ui.err.print(f"vpatch: the replay killed inside `git am` is redone from {start[:12]}")

    def save(self) -> None:
        save_state(self.checkout, self.state)

    def patch_path(self, name: str) -> Path:
        return self.private / "patches" / name

    def patch(self, name: str) -> Patch:
        return parse_patch(self.patch_path(name))

    def count(self) -> int:
        return len(self.repo.commits(f"{UPSTREAM_REF}..HEAD"))

    def settle(
        self,
        name: str,
        status: Outcome,
        details: list[str],
        commit: str | None = None,
        *,
        save: bool = True,
        reason: str | None = None,
    ) -> None:
        self.state.outcomes.append(PatchResult(name, self.patch(name).subject, status, details, commit, reason=reason))
        self.state.current = None
        self.state.stopped = None
        self.state.continuing = None
        self.state.rr_ids = None
        self.recorder.drop_pending()
        if save:  # a batch saves once, when all its patches are settled (a kill between would lose commits)
            self.state.am_from = None
            self.save()

    def replay(self) -> RebaseResult | None:
        """Replay what remains: the result so far when a patch stops it, None when every patch is settled."""
        while self.state.remaining:
            if len(self.state.remaining) > 1 and self.replay_batch():
                continue
            name = self.state.remaining.pop(0)
            self.state.current = name
            self.state.current_start = self.count()
            self.state.current_head = self.repo.rev_parse("HEAD")
            self.state.am_from = self.state.current_head  # until the outcome is saved
            self.save()
            before = reuse.postimage_times(self.rr_cache)
            proc = self.repo.am([self.patch_path(name)], three_way=True)
            faults.reached("rebase.am")
            output = proc.output
            if proc.ok:
                self.settle_applied(name, [THREE_WAY_NOTE] if fell_back_to_three_way(output) else [])
                continue
            stop = self.after_stop(name, output, before)
            if stop is not None:
                self.state.stopped = stop
                self.state.am_from = None
                self.save()
                return self.result()
        return None

    def replay_batch(self) -> bool:
        """Replay all remaining patches with one `git am` (most patches of a release apply as they are) and
        settle the ones it applied; False when it applied none. A patch it stops at is not settled: its
        attempt is dropped (the commits before it stay) and the one-patch path replays it, so a stop is
        always a one-patch `git am` session a person can resolve."""
        names = list(self.state.remaining)
        start = self.repo.rev_parse("HEAD")
        assert start is not None
        self.state.am_from = start  # until the outcomes are saved
        self.save()
        proc = self.repo.am([self.patch_path(n) for n in names], three_way=True)
        faults.reached("rebase.am")
        sections = am_sections(proc.output)
        if not proc.ok:
            if not am_in_progress(self.checkout):
                return False  # not a stop `git am` explains; the one-patch path reports it
            self.repo.am_quit()
            self.repo.reset_hard("HEAD")
            sections = sections[:-1]  # the stopped patch
        commits = iter(self.repo.commits(f"{start}..HEAD"))
        for name, section in zip(names, sections, strict=False):
            self.state.remaining.remove(name)
            if ALREADY_APPLIED in section:
                self.settle(name, Outcome.EMPTY, [BECAME_EMPTY], save=False)
            elif fell_back_to_three_way(section):
                self.settle(name, Outcome.MERGED, ["applied with a three-way merge"], next(commits), save=False)
            else:
                self.settle(name, Outcome.CLEAN, [], next(commits), save=False)
        self.state.am_from = None
        self.save()
        return bool(sections)

    def settle_applied(self, name: str, notes: list[str]) -> None:
        """The current patch's `git am` succeeded: a commit (clean or merged), or nothing (empty)."""
        assert self.state.current_start is not None
        if self.count() > self.state.current_start:
            merged = bool(notes)
            details = [n if n != THREE_WAY_NOTE else "applied with a three-way merge" for n in notes]
            self.settle(name, Outcome.MERGED if merged else Outcome.CLEAN, details, self.repo.rev_parse("HEAD"))
        else:
            self.settle(name, Outcome.EMPTY, [BECAME_EMPTY])

    @property
    def rr_cache(self) -> Path:
        return self.repo.git_dir() / "rr-cache"

    def index_resolutions(self, conflicts: dict[str, str], name: str) -> None:
        """Index the resolutions git recorded for the conflicts `name` stopped with."""
        if conflicts:
            rebase = f"{self.state.old_version} → {self.state.new_version}"
            reuse.record(self.rr_cache, conflicts, patch=name, rebase=rebase)

    def after_stop(self, name: str, output: str, before: dict[str, int] | None = None) -> Stop | None:
        """`git am` stopped on `name`: settle it if rerere resolved every conflict, else describe the stop.

        A replayed resolution is announced: which file, and (from the index) the patch, rebase and time it
        was recorded for."""
        if not am_in_progress(self.checkout):
            lines = [line for line in output.splitlines() if line.strip()]
            raise VpatchError(f"{name}: git am failed: {lines[-1] if lines else 'no output'}")
        unmerged = unmerged_paths(self.repo)
        if unmerged:
            return self.after_conflict(name, unmerged, before)
        check = self.repo.apply(self.patch_path(name), check=True, verbose=True)
        details = list(describe_apply_failure(self.patch(name), check.errors))
        why = [line for line in output.splitlines() if line.startswith(("error:", "fatal:"))]
        details += [line for line in why if "Failed to merge" not in line and line not in details]
        return self.with_upstream(Stop(name, Outcome.FAILED, [], details))

    def after_conflict(self, name: str, unmerged: list[tuple[str, str]], before: dict[str, int] | None) -> Stop | None:
        """Conflicts: replay the recorded resolutions (the tree's, then rerere's) and go on when they resolve
        every file; else the stop, naming a recorded resolution that no longer matches."""
        reusing = not self.state.no_reuse
        content = [path for code, path in unmerged if code in ("UU", "AA")]
        preimages = {path: resolutions.conflicted_text(self.repo, self.checkout.path, path) for path in content}
        index, other_step = (None, None)
        if reusing:
            directory = self.tree_resolutions
            index, other_step = resolutions.step_index(directory, self.state.old_version, self.state.new_version)
        applied = resolutions.apply_recorded(self.tree_resolutions, index, self.checkout.path, name, preimages)
        unresolved = self.repo.rerere_remaining() if reusing else set()
        by_rerere = [
            path
            for _, path in unmerged
            if reusing
            and path not in unresolved
            and path not in applied.resolved
            and path not in applied.mismatched
            and (self.checkout.path / path).is_file()
            and not conflict_hunks(self.checkout.path / path)
        ]
        auto = applied.resolved + by_rerere
        notes = list(applied.notes)
        used = reuse.used(self.rr_cache, before or {}) if by_rerere else []
        if by_rerere:
            notes.append(reuse.describe(self.rr_cache, used, by_rerere))
        when = reuse.recorded_times(self.rr_cache, used)
        how = {path: ("recorded resolution (rerere)", when.get(path, "")) for path in by_rerere} | applied.how
        self.recorder.hold(name, preimages, how)
        note = "; ".join(notes)
        if auto:
            self.repo.add(auto)
            ui.err.print(f"vpatch: {name}: {note}", markup=False, highlight=False)
        self.state.rr_ids = reuse.merge_rr(self.repo) or None
        if len(auto) == len(unmerged):
            self.recorder.resolved(self.repo, "")
            self.continue_am(name, note)
            return None
        files = [
            ConflictFile(path, CONFLICT_KINDS.get(code, code), conflict_hunks(self.checkout.path / path))
            for code, path in unmerged
            if path not in auto
        ]
        details = [f"{f.path}: {f.kind}" + (f" at {line_ranges(f.hunks)}" if f.hunks else "") for f in files]
        details += [applied.mismatched[f.path] for f in files if f.path in applied.mismatched]
        details += [line for line in (note, other_step) if line]
        return self.with_upstream(Stop(name, Outcome.CONFLICT, files, details))

    def with_upstream(self, stop: Stop) -> Stop:
        """The stop with its hunks' post-images looked for in NEW: "upstream has it" when every one is there,
        else a line per hunk that is (the rest is the conflict to resolve)."""
        release = f"{self.checkout.project} {self.state.new_version}"
        stop.upstream = hunks_in_new(self.repo, self.checkout.base_commit, self.patch(stop.name).data)
        found = [h for h in stop.upstream if h.found]
        if stop.upstream_has_it:
            stop.details = [
                f"upstream has it: every hunk's change is already in {release} (by content)",
                *(f"  {h.describe(release)}" for h in found),
                *stop.details,
            ]
        elif found:
            stop.details = [
                *stop.details,
                f"upstream has {len(found)} of its {len(stop.upstream)} hunks:",
                *(f"  {h.describe(release)}" for h in found),
            ]
        return stop

    def continue_am(self, name: str, note: str) -> None:
        proc = self.repo.am_continue()
        faults.reached("rebase.am")
        output = proc.output
        if proc.ok:
            self.settle_applied(name, [note])
            return
        if "No changes" in output:
            # Resolved to exactly what the new base has: nothing left of this patch.
            self.repo.am_skip()
            self.settle(name, Outcome.EMPTY, [f"{note}; {BECAME_EMPTY}"])
            return
        lines = [line for line in output.splitlines() if line.strip()]
        raise VpatchError(f"{name}: git am --continue failed: {lines[-1] if lines else 'no output'}")

    def result(self) -> RebaseResult:
        """The replay so far, stopped: settled patches, the stopped one, then the ones still pending."""
        self.settle_old_head()
        outcomes = list(self.state.outcomes)
        stopped = self.state.stopped
        if stopped:
            outcomes.append(
                PatchResult(stopped.name, self.patch(stopped.name).subject, stopped.shown_status, stopped.details, None)
            )
        for name in self.state.remaining:
            outcomes.append(PatchResult(name, self.patch(name).subject, Outcome.PENDING, [], None))
        return RebaseResult(self.checkout, self.state.old_version, self.state.new_version, outcomes, stopped=stopped)
