"""`vpatch retire PATCH --since NEW`: drop a patch upstream now carries, and record why.

The gate: a patch of a feature with a contract (kv-routing, pd-disagg; toolkit/contracts/) is retired only
when every item of that contract passes on NEW, in every transport configuration, in a
`vpatch conform NEW --against OLD` results file (committed under patches/conformance/, under
out/conform, or given with --conformance). Supporting evidence, recorded beside it:
- the rebase onto NEW (`patches/vllm-NEW/evidence.json`): the patch became empty, its patch-id matches an
  upstream commit, it reverse-applies on NEW, or its header says it is upstream;
- the patch's own header (`Applied-Upstream:` or `Upstream-Status: Accepted [...]`).
A patch of a feature without a contract needs any of the supporting evidence, and so does a patch of a
sub-feature (`Feature: pd-disagg/failed-loads`, toolkit/features.py): a part retires on its own patch's
evidence, while its parent's contract still judges the parent (the verdict, toolkit/verdict.py, wants it
passing before stock is the default); a passing parent contract is recorded as its first evidence.
Otherwise it refuses unless `--force --reason TEXT` (the reason, and what the contracts said, are recorded
as the evidence).

What it writes (computed first, then written as one transaction, toolkit/txn.py):
- every pinned series from NEW on that carries the patch loses it (file and series line); the file moves
  to `retired/` in NEW's series with `Retired-Since:` and `Retired-Evidence:` headers;
- the last series before NEW that carries it gets the same two headers in that patch;
- CHANGELOG.md gets a line under `## [Unreleased]` / `### Retired`.
Retiring a patch again changes nothing: `already` names the release it was retired since.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.features import is_sub, parent_of
from toolkit.lifecycle.upstream import against_results, contract_findings, item_finding
from toolkit.model import Patch, Pin, parse_patch, parse_series_file
from toolkit.project import Project
from toolkit.records.codec import RecordError
from toolkit.records.contract import CONTRACT_FEATURES, SUB_FEATURE_ITEMS
from toolkit.records.evidence import EVIDENCE_FILE, decode_evidence
from toolkit.trailer import add_trailers
from toolkit.txn import transaction


@dataclass(frozen=True)
class Retirement:
    patch: str
    feature: str
    since: str
    evidence: tuple[str, ...]
    forced: bool
    removed_from: tuple[str, ...]  # series directories that lost the patch
    recorded_in: str | None  # the last series that still carries it, now with Retired-* headers
    changelog: str
    already: str | None = None  # set when the patch was retired before: nothing was written


def find_evidence(project: Project, pin: Pin, name: str, patch: Patch | None) -> list[str]:
    """The supporting evidence: rebase signals and the patch's own headers."""
    evidence: list[str] = []
    evidence_file = project.series_dir(pin) / EVIDENCE_FILE
    if evidence_file.is_file():
        try:
            entry = decode_evidence(evidence_file.read_bytes()).patches.get(name)
        except RecordError as exc:
            raise VpatchError(str(exc), path=evidence_file, line=exc.line) from None
        # native_since is pins.toml's hint that upstream has the feature, not a finding about this patch
        signals = [s for s in (entry.upstream_signals if entry else []) if s != "native_since"]
        if signals:
            evidence.append(f"rebase onto {pin.version}: {', '.join(signals)}")
    if patch is not None:
        status = patch.header("Upstream-Status") or ""
        if patch.header("Applied-Upstream"):
            evidence.append(f"Applied-Upstream: {patch.header('Applied-Upstream')}")
        elif status.startswith("Accepted"):
            evidence.append(f"Upstream-Status: {status}")
    return evidence


def contract_gate(project: Project, pin: Pin, feature: str, conformance: Path | None) -> tuple[bool, str]:
    """(passes, what the contract results say) for `feature` on stock NEW."""
    paths = against_results(project.options.root, pin, conformance, patches_dir=project.options.patches_dir)
    finding = contract_findings(paths, str(pin.version)).get(feature)
    if finding is None:
        return False, (
            f"no {feature} contract results for vLLM {pin.version} (run `vpatch conform {pin.version} --against`)"
        )
    passes, lacking, file = finding
    if passes:
        return True, f"contracts: every {feature} item passes on vLLM {pin.version} ({file})"
    # every item passes in some result, but no one result passes them all
    said = "; ".join(lacking) or "no one result passes every item"
    return False, f"vLLM {pin.version} does not meet the {feature} contract: {said} ({file})"


def item_gate(project: Project, pin: Pin, sub: str, conformance: Path | None) -> tuple[bool, str]:
    """(passes, what the results say) for the contract item that judges sub-feature `sub` on stock NEW."""
    feature, item = SUB_FEATURE_ITEMS[sub]
    paths = against_results(project.options.root, pin, conformance, patches_dir=project.options.patches_dir)
    finding = item_finding(paths, str(pin.version), feature, item)
    if finding is None:
        return False, (
            f"no stock {feature} result judges {item} for vLLM {pin.version} "
            f"(run `vpatch conform {pin.version} --tier engine --new-kind stock --save`)"
        )
    passes, line, file = finding
    if passes:
        return True, f"contracts: {feature}/{item} passes on stock vLLM {pin.version}: {line} ({file})"
    return False, f"stock vLLM {pin.version} does not meet {feature}/{item}: {line} ({file})"


def _series_without(series_file: Path, name: str) -> str:
    text = series_file.read_text(encoding="utf-8")
    kept = [line for line in text.split("\n") if line.split("#", 1)[0].split()[:1] != [name]]
    return "\n".join(kept)


def retire(
    project: Project,
    name: str,
    since: str,
    *,
    force: bool = False,
    reason: str | None = None,
    conformance: Path | None = None,
) -> Retirement:
    new_pin = project.pins.get(since)
    if "/" in name or name in ("", ".", ".."):
        raise VpatchError(f"{name!r} is not a patch file name (as in the series file)")
    carriers = []  # (pin, patch) of every pinned series that carries the patch
    for pin in project.pins.pins:
        if not project.has_series(pin):
            continue
        entries, _ = parse_series_file(project.series_dir(pin) / "series")
        if any(e.name == name for e in entries):
            carriers.append((pin, parse_patch(project.series_dir(pin) / name)))
    retired_since = _retired_record(project, name)
    if retired_since is not None and not any(pin.version >= new_pin.version for pin, _ in carriers):
        return Retirement(name, "", retired_since, (), False, (), None, "", already=retired_since)
    if not carriers:
        raise VpatchError(f"no pinned series carries {name}")
    patch = next((p for pin, p in carriers if pin.version >= new_pin.version), carriers[-1][1])
    before = [(pin, p) for pin, p in carriers if pin.version < new_pin.version]
    after = [(pin, p) for pin, p in carriers if pin.version >= new_pin.version]
    evidence = find_evidence(project, new_pin, name, patch)
    gated = patch.feature in CONTRACT_FEATURES
    parent = parent_of(patch.feature or "")
    if not gated and is_sub(patch.feature or "") and parent in CONTRACT_FEATURES:
        passes, said = contract_gate(project, new_pin, parent, conformance)
        if passes:
            evidence.insert(0, said)
    if patch.feature in SUB_FEATURE_ITEMS or gated:
        # judged by its own contract item (a sub-feature that has one), as a feature by its contract
        gate = item_gate if patch.feature in SUB_FEATURE_ITEMS else contract_gate
        gated = True
        passes, said = gate(project, new_pin, patch.feature or "", conformance)
        if passes:
            evidence.insert(0, said)
        elif not (force and reason):
            raise VpatchError(f"refusing to retire {name}: {said}; use --force --reason TEXT to retire it anyway")
        else:
            evidence = [f"forced: {reason}", said, *evidence]
    if not gated and not evidence:
        if not (force and reason):
            raise VpatchError(
                f"no evidence that vLLM {since} carries {name} (rebase evidence.json or "
                "Applied-Upstream/Accepted header); use --force --reason TEXT to retire it anyway"
            )
        evidence = [f"forced: {reason}"]
    elif force and reason and not evidence[0].startswith("forced:"):
        evidence.append(f"note: {reason}")
    headers = [("Retired-Since", since), ("Retired-Evidence", "; ".join(evidence))]

    writes: dict[Path, dict[str, bytes]] = {}  # series directory -> files to write there
    dropped: dict[Path, set[str]] = {}
    for pin, carried in after:
        directory = project.series_dir(pin)
        writes.setdefault(directory, {})["series"] = _series_without(directory / "series", name).encode()
        dropped.setdefault(directory, set()).add(name)
        if pin.version == new_pin.version:
            writes[directory][f"retired/{name}"] = add_trailers(carried.data, headers)
    if not any(pin.version == new_pin.version for pin, _ in after) and project.has_series(new_pin):
        writes.setdefault(project.series_dir(new_pin), {})[f"retired/{name}"] = add_trailers(patch.data, headers)
    recorded_in = None
    if before:
        last_pin, last_patch = before[-1]
        recorded_in = str(project.series_dir(last_pin).relative_to(project.options.root))
        writes.setdefault(project.series_dir(last_pin), {})[name] = add_trailers(last_patch.data, headers)
    changelog_path = project.options.root / "CHANGELOG.md"
    line = f"- `{name}` ({patch.feature}) retired since vLLM {since}: upstream carries it ({'; '.join(evidence)})."
    # An unreadable CHANGELOG.md fails here, before anything is written.
    old = changelog_path.read_bytes() if changelog_path.exists() else None
    changelog = _changelog_with(_changelog_text(old, changelog_path), line)
    # everything is computed: now write, all or nothing
    with transaction(project.options.patches_dir, f"retire of {name} since {since}") as txn:
        for directory, files in writes.items():
            txn.stage_series(directory, files, owned=dropped.get(directory, ()))
        txn.stage_file(changelog_path, changelog.encode("utf-8"))
        txn.commit()
    return Retirement(
        name,
        patch.feature,
        since,
        tuple(evidence),
        evidence[0].startswith("forced:"),
        tuple(project.series_dir(p).name for p, _ in after),
        recorded_in,
        line,
    )


def _retired_record(project: Project, name: str) -> str | None:
    """The Retired-Since of `name` kept under some pinned series' retired/, if any."""
    for pin in project.pins.pins:
        kept = project.series_dir(pin) / "retired" / name
        if kept.is_file():
            try:
                since = parse_patch(kept).header("Retired-Since")
            except VpatchError:
                continue
            if since:
                return since
    return None


def _changelog_text(data: bytes | None, path: Path) -> str | None:
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise VpatchError("not valid UTF-8", path=path, line=data[: exc.start].count(b"\n") + 1) from None


def _changelog_with(text: str | None, line: str) -> str:
    if text is None:
        text = "# Changelog\n\n## [Unreleased]\n"
    if "## [Unreleased]" not in text:
        text = text.rstrip("\n") + "\n\n## [Unreleased]\n"
    start = text.index("## [Unreleased]")
    end = text.find("\n## ", start + 1)
    section = text[start:] if end == -1 else text[start:end]
    if "### Retired" in section:
        marker = section.index("### Retired") + len("### Retired\n")
        section = section[:marker] + line + "\n" + section[marker:]
    else:
        section = section.rstrip("\n") + "\n\n### Retired\n" + line + "\n"
    return text[:start] + section + ("" if end == -1 else "\n" + text[end:].lstrip("\n"))
