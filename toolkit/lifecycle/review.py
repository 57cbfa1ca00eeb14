"""Refresh a rebased series' review files after it was edited by hand.

`vpatch rebase` writes `range-diff.txt` and `evidence.json` for the series it produced. When a maintainer
then changes that series (reworks a patch onto an API the new release brought, brings back a patch the
rebase skipped, adds one), the review files must describe the series as it is: `refresh_review` applies
the old series on OLD's base and the current one on NEW's, rewrites the range-diff, and updates the
evidence entries (outcome `reworked` for a patch the rebase dropped that is back, `added` for a new one,
`content_changed` recomputed) while keeping what the rebase recorded.
"""

from __future__ import annotations

from dataclasses import dataclass

from msgspec import UNSET

from toolkit.apply import apply_series
from toolkit.checkout import add_base_objects
from toolkit.errors import VpatchError
from toolkit.lifecycle.rebase.recipes import old_series_head, range_diff
from toolkit.lifecycle.rebase.state import RANGE_DIFF_FILE
from toolkit.lifecycle.upstream import patch_id, patch_ids
from toolkit.model import Patch, Pin
from toolkit.project import Project
from toolkit.records.codec import RecordError
from toolkit.records.evidence import EVIDENCE_FILE, Dropped, PatchEntry, decode_evidence, encode_evidence
from toolkit.records.outcome import DROPPED, Outcome
from toolkit.txn import transaction


@dataclass
class ReviewResult:
    version: str
    old_version: str
    changes: dict[str, str]  # patch name -> what changed in its evidence entry

    def as_dict(self) -> dict:
        return {"version": self.version, "old_version": self.old_version, "changes": self.changes}


def refresh_review(project: Project, new_pin: Pin) -> ReviewResult:
    new_series = project.series(new_pin)
    evidence_path = new_series.directory / EVIDENCE_FILE
    try:
        evidence = decode_evidence(evidence_path.read_bytes())
    except FileNotFoundError:
        raise VpatchError(
            "no evidence.json: only a series written by `vpatch rebase` has review files", path=evidence_path
        ) from None
    except RecordError as exc:
        raise VpatchError(str(exc), path=evidence_path, line=exc.line) from None
    except OSError as exc:
        raise VpatchError(f"unreadable: {exc.strerror or exc}", path=evidence_path) from None
    old_pin = project.pins.get(evidence.old.version)
    old_series = project.series(old_pin)
    changes: dict[str, str] = {}
    with project.scratch_checkout(new_pin) as checkout:
        repo = checkout.git
        old_base = project.base(old_pin)
        add_base_objects(checkout, [old_base])
        old_head = old_series_head(project, old_pin, old_series, old_base, checkout)
        applied = apply_series(checkout, new_series)
        if not applied.ok:
            stopped = applied.stopped_at
            assert stopped is not None
            raise VpatchError(
                f"does not apply to {new_pin.label}: " + "; ".join(stopped.details),
                path=new_series.directory / stopped.name,
            )
        new_head = repo.rev_parse("HEAD")
        assert new_head is not None
        renamed = {
            name: entry.renamed_from for name, entry in evidence.patches.items() if isinstance(entry.renamed_from, str)
        }
        text = range_diff(repo, old_base.commit, old_head, checkout.base_commit, new_head, renamed=renamed)
        # Every patch-id this needs, old and new, in one git run.
        ids = patch_ids(repo, [p.data for p in old_series.patches] + [p.data for p in new_series.patches])
        old_ids = {p.name: i for p, i in zip(old_series.patches, ids, strict=False)}
        entries = evidence.patches
        for position, patch in enumerate(new_series.patches, start=1):
            new_id = patch_id(repo, patch.data)
            entry = entries.get(patch.name)
            if entry is None and patch.name in old_ids:
                # OLD's series was re-cut after the rebase (a patch split in both series, same names): this
                # patch carries OLD's patch of that name, written by hand on both sides
                entries[patch.name] = _by_hand(
                    patch,
                    position,
                    Outcome.REWORKED,
                    f"re-cut by hand in both {old_pin.label}'s series and this one after the rebase",
                    new_id,
                    patch_id=old_ids[patch.name],
                    content_changed=old_ids[patch.name] != new_id,
                )
                changes[patch.name] = f"{Outcome.REWORKED} (re-cut in both series)"
                continue
            if entry is None:
                entries[patch.name] = _by_hand(
                    patch, None, Outcome.ADDED, f"added by hand after the rebase, at position {position}", new_id
                )
                changes[patch.name] = Outcome.ADDED
                continue
            written = None if entry.new_patch_id is UNSET else entry.new_patch_id
            if written is None and entry.outcome == Outcome.CLEAN:
                written = entry.patch_id  # a clean replay does not change the diff
            if entry.outcome == Outcome.REWORKED and entry.kept:
                if written != new_id:  # already recorded as reworked: no second note
                    changes.setdefault(patch.name, "reworked again")
            elif (
                entry.kept
                and entry.outcome == Outcome.CLEAN
                and written != new_id
                and new_id == old_ids.get(patch.name)
            ):
                # edited alike in both series since (a reformat): the step itself is still a clean replay
                changes.setdefault(patch.name, "clean (edited alike in both series)")
            elif not entry.kept or (written is not None and written != new_id):
                again = "written again" if not entry.kept else "reworked"
                note = f"{entry.outcome} in the rebase; {again} by hand onto {new_pin.label} afterwards"
                entry.details = [*entry.details, note]
                entry.outcome = Outcome.REWORKED
                entry.kept = True
                changes[patch.name] = Outcome.REWORKED
            entry.new_patch_id = new_id
            if patch.name in old_ids and entry.patch_id not in (None, old_ids[patch.name]):
                entry.patch_id = old_ids[patch.name]  # the old series' patch was edited since
                changes.setdefault(patch.name, "old patch changed")
            # an added patch has no old one to compare with
            changed = None if entry.outcome == Outcome.ADDED else old_ids.get(patch.name) != new_id
            if entry.content_changed != changed:
                changes.setdefault(patch.name, "content_changed recomputed")
            entry.content_changed = changed
            if entry.subject != patch.subject:
                entry.subject = patch.subject
                changes.setdefault(patch.name, "subject changed")
            if entry.feature != patch.feature:
                entry.feature = patch.feature
                changes.setdefault(patch.name, "feature changed")
    present = {p.name for p in new_series.patches}
    for name in [n for n, e in entries.items() if e.kept and n not in present and n not in old_ids]:
        # carried by the rebase, since gone from both series (re-cut on both sides): this step no longer has it
        added = entries.pop(name).outcome == Outcome.ADDED
        changes[name] = "added by hand, since taken out again" if added else "gone from both series"
    for name, entry in evidence.patches.items():
        if entry.kept and name not in present:
            entry.kept = False
            entry.outcome = Outcome.REMOVED
            entry.details = [*entry.details, "removed by hand after the rebase"]
            changes[name] = Outcome.REMOVED
    evidence.kept = [p.name for p in new_series.patches]
    evidence.dropped = [
        Dropped(name=name, feature=entry.feature, reason=entry.outcome)
        for name, entry in sorted(evidence.patches.items())
        if not entry.kept and entry.outcome in (*DROPPED, Outcome.REMOVED)
    ]
    with transaction(project.options.patches_dir, f"review of {new_series.directory.name}") as txn:
        txn.stage_file(new_series.directory / RANGE_DIFF_FILE, text.encode("utf-8"))
        txn.stage_file(evidence_path, encode_evidence(evidence).encode("utf-8"))
        txn.commit()
    return ReviewResult(str(new_pin.version), str(old_pin.version), changes)


def _by_hand(
    patch: Patch,
    position: int | None,
    outcome: Outcome,
    note: str,
    new_id: str | None,
    *,
    patch_id: str | None = None,
    content_changed: bool | None = None,
) -> PatchEntry:
    """The entry of a patch the series carries by hand since the rebase (kept; no rebase evidence):
    `patch_id` is that of OLD's patch of the same name, when there is one."""
    return PatchEntry(
        position=position,
        subject=patch.subject,
        feature=patch.feature,
        outcome=outcome,
        details=[note],
        kept=True,
        content_changed=content_changed,
        patch_id=patch_id,
        new_patch_id=new_id,
        evidence=None,
        upstream_signals=[],
    )
