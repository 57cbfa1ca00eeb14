"""Completing a rebase: the new series' mails, its evidence and range-diff, NEW's pin, written as one transaction.

Only a completed rebase writes anything under patches/: the new series `patches/<project>-NEW/` (old
headers carried over, `Last-Update:` refreshed on patches whose change differs, empty patches left out),
`range-diff.txt` (old series on OLD's base vs new series on NEW's) and `evidence.json`, swapped in as one
directory; and, when NEW was pinned for the rebase, its pin. The old series is never touched.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from toolkit.checkout import STATE_FILE, UPSTREAM_REF, state_text
from toolkit.errors import VpatchError
from toolkit.export import _series_text
from toolkit.lifecycle.rebase.mail import retarget_comments, today
from toolkit.lifecycle.rebase.recipes import range_diff
from toolkit.lifecycle.rebase.replay import Replay
from toolkit.lifecycle.rebase.state import RANGE_DIFF_FILE, PatchResult, RebaseResult
from toolkit.lifecycle.rebase.truth import keep_true
from toolkit.lifecycle.upstream import (
    against_results,
    carried_forward,
    collect_evidence,
    conformance_evidence,
    patch_id,
    patch_ids,
)
from toolkit.model import Pin, parse_patch
from toolkit.pins import load_pins, write_pin
from toolkit.records.codec import RecordError
from toolkit.records.evidence import EVIDENCE_FILE, Dropped, Evidence, decode_evidence, encode_evidence
from toolkit.records.outcome import KEPT, Outcome
from toolkit.render import render_range, set_patch_file_header
from toolkit.sources import materialize
from toolkit.trailer import set_trailer
from toolkit.txn import transaction

BESIDE_SUFFIX = ".rebased"


def result_dir(patches_dir: Path, pin: Pin, *, beside: bool) -> Path:
    """Where a completed rebase writes: NEW's series directory, or (`--beside`) `<it>.rebased/` next to it."""
    return patches_dir / (pin.series_dirname + (BESIDE_SUFFIX if beside else ""))


def new_pin(rebase: Replay) -> Pin:
    """NEW's pin: from pins.toml, or the rebase's private copy while it is not written yet."""
    if not rebase.state.pending_pin:
        return rebase.project.pins.get(rebase.state.new_version)
    return load_pins(rebase.private / "pin.toml").get(rebase.state.new_version)


def finish(rebase: Replay) -> RebaseResult:
    state = rebase.state
    project, repo = rebase.project, rebase.repo
    options = project.options
    old_pin = project.pins.get(state.old_version)
    pin = new_pin(rebase)
    series_dir = result_dir(options.patches_dir, pin, beside=bool(state.beside))
    if (series_dir / "series").exists() and not state.force:
        raise VpatchError(
            f"{series_dir} already has a series (written since the rebase started); "
            "`vpatch rebase --continue --force` replaces it"
        )
    kept = [o for o in state.outcomes if o.status in KEPT]
    commits = repo.commits(f"{UPSTREAM_REF}..HEAD")
    if len(commits) != len(kept):
        raise VpatchError(
            f"{rebase.checkout.path}: {len(commits)} commits above {UPSTREAM_REF}, but the rebase kept "
            f"{len(kept)} patches; put the branch back (or `vpatch rebase --abort`)"
        )
    mails, changed, renamed = final_mails(rebase, kept)
    old_patches = [rebase.patch(name) for name in state.patches]
    old_base = project.base(old_pin)
    new_base = materialize(pin, options.cache_dir, quiet=options.json)
    new_head = repo.rev_parse("HEAD")
    assert new_head is not None
    # The evidence (a git run per patch) is gathered beside the range-diff, which may still wait for
    # the old series' commits.
    with ThreadPoolExecutor(max_workers=1) as pool:
        evidence_job = pool.submit(
            collect_evidence,
            repo,
            project=pin.project,
            old_base=old_base,
            new_base=new_base,
            patches=old_patches,
            outcomes=list(state.outcomes),
            content_changed=changed,
            earlier=earlier(rebase),
            conformance=conformance_evidence(
                against_results(options.root, pin, patches_dir=options.patches_dir), str(pin.version)
            ),
            native_since={name: info.get("native_since") for name, info in project.pins.feature_info.items()},
        )
        rebase.settle_old_head()
        review = range_diff(
            repo, state.old_base, state.old_head, rebase.checkout.base_commit, new_head, renamed=renamed
        )
        evidence = evidence_job.result()
    rename_in_evidence(evidence, renamed)
    for name, data in mails:
        # What the rebase wrote, so `vpatch review` can tell later hand edits apart.
        evidence.patches[name].new_patch_id = patch_id(repo, data)
    old_text = (rebase.private / "series").read_text(encoding="utf-8")
    names = [name for name, _ in mails]
    series_text = old_text if names == state.patches else _series_text(old_text, names)
    series_text = retarget_comments(series_text, state.old_version, state.new_version)
    pinned = write_new_pin(rebase, pin)
    retired = [(o.name, rebase.patch(o.name).data) for o in state.outcomes if o.status == Outcome.RETIRED]
    # The checkout's state leaves "rebasing" in the same transaction as the series is written: a kill
    # leaves the rebase to continue or the rebase done, never a series with the rebase still pending.
    done = rebase.checkout.git.git_dir() / STATE_FILE
    done_state = state_text(rebase.checkout, {"rebased_from": state.old_version}).encode()
    write_series(
        series_dir,
        mails,
        series_text,
        evidence,
        review,
        retired=retired,
        also={done: done_state},
        resolutions=rebase.recorder.series_files(),
    )
    outcomes = state.outcomes
    now_named = {old: new for new, old in renamed.items()}
    for outcome in outcomes:
        if outcome.status in KEPT:
            outcome.content_changed = changed[outcome.name]
            outcome.name = now_named.get(outcome.name, outcome.name)
    dropped = [o.name for o in outcomes if o.status not in KEPT]
    shutil.rmtree(rebase.private, ignore_errors=True)
    return RebaseResult(
        rebase.checkout,
        state.old_version,
        state.new_version,
        outcomes,
        series_dir=series_dir,
        range_diff=review,
        evidence=evidence,
        pinned=pinned,
        dropped=dropped,
    )


def earlier(rebase: Replay) -> list[Dropped]:
    """What the old series' own evidence.json says was dropped before (unreadable: nothing)."""
    path = rebase.private / EVIDENCE_FILE
    try:
        return carried_forward(decode_evidence(path.read_bytes())) if path.is_file() else []
    except (OSError, RecordError):
        return []


def rename_in_evidence(evidence: Evidence, renamed: dict[str, str]) -> None:
    """evidence.json speaks of the new series' names: a renamed patch's entry under its new name, with
    `renamed_from`."""
    if not renamed:
        return
    now_named = {old: new for new, old in renamed.items()}
    evidence.patches = {now_named.get(name, name): entry for name, entry in evidence.patches.items()}
    for new, old in renamed.items():
        evidence.patches[new].renamed_from = old
    evidence.kept = [now_named.get(name, name) for name in evidence.kept]


def final_mails(
    rebase: Replay, kept: list[PatchResult]
) -> tuple[list[tuple[str, bytes]], dict[str, bool], dict[str, str]]:
    """The new series' mails; `Last-Update:` refreshed where the change itself differs from the old patch.

    "Differs" means a different `git patch-id --stable`: moved hunks and new blob ids are not a change,
    a three-way merge or a resolution that altered the diff is. Names, subjects and `Origin:` made by an
    import are kept true (toolkit/lifecycle/rebase/truth.py). When any message changes, the branch is
    rebuilt from the final mails, so the checkout and the written series are the same thing. Returns the
    mails, which patches changed (by old name) and the renamed ones (new name -> old name).
    """
    repo = rebase.repo
    rendered = render_range(repo, UPSTREAM_REF, "HEAD")
    date = today()
    mails: list[tuple[str, bytes]] = []
    changed: dict[str, bool] = {}
    renamed: dict[str, str] = {}
    state = rebase.state
    names = [o.name for o in kept]
    subjects = {rebase.patch(o.name).subject for o in kept}
    # Every patch-id this needs (and the evidence after it), in one git run.
    patch_ids(repo, [rebase.patch(o.name).data for o in kept] + [m.data for m in rendered])
    for outcome, mail in zip(kept, rendered, strict=True):
        name = outcome.name
        old = rebase.patch(name)
        data = mail.data
        if parse_patch(rebase.private / name, data).header("Patch-File") is None:
            data = set_patch_file_header(data, name)
        changed[name] = patch_id(repo, old.data) != patch_id(repo, data)
        if changed[name]:
            data = set_trailer(data, "Last-Update", date)
        subjects.discard(old.subject)
        now, data, said = keep_true(
            old,
            parse_patch(rebase.private / name, data),
            changed=changed[name],
            names=names,
            subjects=subjects,
            project=rebase.project.pins.get(state.old_version).project,
            old_version=state.old_version,
            new_version=state.new_version,
        )
        outcome.subject = parse_patch(rebase.private / now, data).subject
        subjects.add(outcome.subject)
        outcome.details.extend(said)
        if now != name:
            renamed[now] = name
            names[names.index(name)] = now
        mails.append((now, data))
    if all(data == mail.data for (_, data), mail in zip(mails, rendered, strict=True)):
        return mails, changed, renamed
    final = rebase.private / "final"
    final.mkdir(exist_ok=True)
    paths = []
    for number, (_name, data) in enumerate(mails, start=1):
        path = final / f"{number:04d}.patch"
        path.write_bytes(data)
        paths.append(path)
    repo.reset_hard(UPSTREAM_REF)
    repo.am(paths, check=True)
    rerendered = render_range(repo, UPSTREAM_REF, "HEAD")
    for outcome, mail in zip(kept, rerendered, strict=True):
        outcome.commit = mail.commit
    result = [(name, mail.data) for (name, _), mail in zip(mails, rerendered, strict=True)]
    return result, changed, renamed


def write_new_pin(rebase: Replay, pin: Pin) -> bool:
    """Write NEW's pin if the rebase pinned it; True when it did."""
    if not rebase.state.pending_pin:
        return False
    options = rebase.project.options
    # Under the project lock: a pin of NEW written meanwhile (by `pin add`) is kept, not overwritten.
    existing = write_pin(options.pins_file, pin, replace=False)
    if existing is None:
        return True
    base = materialize(existing, options.cache_dir, quiet=options.json)
    if base.commit != rebase.checkout.base_commit:
        raise VpatchError(
            f"{pin.label} was pinned since the rebase started, with another base ({base.commit[:12]})",
            path=options.pins_file,
        )
    return False


def write_series(
    directory: Path,
    mails: list[tuple[str, bytes]],
    series_text: str,
    evidence: Evidence,
    range_diff: str,
    *,
    retired: Sequence[tuple[str, bytes]] = (),
    also: Mapping[Path, bytes] | None = None,
    resolutions: Mapping[str, bytes] | None = None,
) -> None:
    """The new series directory (and the files in `also`), staged beside their places, swapped in as one transaction.

    Files vpatch writes in a series directory (patches, series, evidence, range diff, retired/) come
    from the rebase alone; anything else already there (a hand-written NOTES.md) is carried over.
    `retired`: patches not replayed because they were retired for this release; kept under `retired/`
    as `vpatch retire` keeps them. `resolutions`: the conflict resolutions the rebase used, as
    `resolutions/...` (toolkit/lifecycle/rebase/resolutions.py); a series written without any has none.
    """
    files = {name: data for name, data in mails}
    files.update({f"retired/{name}": data for name, data in retired})
    files["series"] = series_text.encode("utf-8")
    files[EVIDENCE_FILE] = encode_evidence(evidence).encode("utf-8")
    files[RANGE_DIFF_FILE] = range_diff.encode("utf-8")
    files.update(resolutions or {})
    with transaction(directory.parent, f"rebase onto {directory.name}") as txn:
        txn.stage_series(directory, files, keep_old=False)
        for path, data in (also or {}).items():
            txn.stage_file(path, data)
        txn.commit()
