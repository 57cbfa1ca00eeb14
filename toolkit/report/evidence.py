"""A rebase's evidence.json as the report reads it: the record the rebase wrote (toolkit/records/evidence.py).

Fields added to format 1 later are optional, so older files still read: a patch's `skip_reason`,
`past_native_since` and `evidence.post_image_in_new` ({found, total, hunks}), a dropped entry's
`skip_reason`, the document's `warnings`.

An evidence file that is missing or unreadable is not fatal: the report shows the problem where the
evidence would have been (`error` on the loaded record), a field of the wrong shape named by its path.
"""

from __future__ import annotations

from pathlib import Path

from msgspec import UNSET, UnsetType

from toolkit.records import evidence as record
from toolkit.records.codec import RecordError, read_document
from toolkit.report.model import Dropped, Evidence, EvidencePatch


def load_evidence(root: Path, rel: str) -> Evidence:
    try:
        evidence = record.decode_evidence(read_document(root / rel))
    except RecordError as exc:
        where = f"{rel}:{exc.line}" if exc.line is not None else rel
        return Evidence(rel, f"{where}: {exc}")
    except (OSError, ValueError) as exc:
        return Evidence(rel, f"{rel}: {exc}")
    return Evidence(
        path=rel,
        old_version=evidence.old.version,
        new_version=evidence.new.version,
        patches=tuple(_patch(name, entry) for name, entry in evidence.ordered()),
        dropped=tuple(_dropped(d) for d in evidence.dropped),
        earlier=tuple(_dropped(d) for d in evidence.earlier),
        warnings=tuple(evidence.warnings or ()),
    )


def _patch(name: str, entry: record.PatchEntry) -> EvidencePatch:
    post = entry.evidence.post_image_in_new if entry.evidence else UNSET
    return EvidencePatch(
        name=name,
        subject=entry.subject,
        feature=entry.feature,
        outcome=entry.outcome.value,
        kept=entry.kept,
        signals=tuple(entry.upstream_signals),
        skip_reason=_given(entry.skip_reason),
        past_native_since=_given(entry.past_native_since),
        hunks_in_new=(post.found, post.total) if post else (0, 0),
    )


def _dropped(entry: record.Dropped) -> Dropped:
    return Dropped(
        entry.name,
        entry.feature,
        entry.reason.value,
        _given(entry.dropped_in),
        _given(entry.skip_reason),
    )


def _given(value: str | UnsetType | None) -> str | None:
    """A field added to format 1 later: None when the file does not have it."""
    return None if isinstance(value, UnsetType) else value
