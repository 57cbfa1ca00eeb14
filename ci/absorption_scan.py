#!/usr/bin/env python3
"""Re-derive, from vLLM's own sdists, which capabilities of the dynamo-base series each release ships.

For every release asked for, the sdist is taken from PyPI's JSON simple index (PEP 691), its sha256
checked against the index (also for a cached copy), and kept under the cache directory. Only the members
the markers name are read, straight from the tarball (nothing is extracted or run). The markers are in
`absorption_markers.py`; docs/upstream-absorption.md is the reading of the results.

    python3 ci/absorption_scan.py [--versions 0.9.0,0.9.2,...] [--cache DIR] [--offline]
                                  [--json OUT] [--check EXPECTED.json] [--evidence]

Standard library only, no vpatch imports. Exit codes: 0 done (and, with --check, every status equals
the expected one); 1 a release has no sdist, a download does not match the index, or --check differs
(one line on stderr per problem); 2 the command line is wrong.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from absorption_markers import CAPABILITIES, INFOS, Marker

INDEX = "https://pypi.org/simple/vllm/"
ACCEPT = "application/vnd.pypi.simple.v1+json"
DEFAULT_CACHE = Path.home() / ".cache" / "vpatch" / "research"
DEFAULT_VERSIONS = (
    "0.9.0,0.9.1,0.9.2,0.10.0,0.10.2,0.11.0,0.11.1,0.12.0,0.13.0,0.14.0,0.14.1,0.16.0,"
    "0.17.0,0.18.0,0.19.0,0.20.0,0.21.0,0.22.0,0.33.0"
)
# How the sdist itself cites upstream work: a pull-request link, "PR #N" or "RFC #N".
PR_LINK = re.compile(r"(?:github\.com/vllm-project/vllm/pull/|PR #|RFC #)(\d+)")


class ScanError(Exception):
    """One line for stderr."""


@dataclass
class Hit:
    file: str
    line: int
    text: str


def load_index(cache: Path, offline: bool) -> dict[str, dict[str, str]]:
    """sdist file name -> {url, sha256}, from the index (or its copy in the cache with --offline)."""
    copy = cache / "vllm-simple-index.json"
    if offline:
        if not copy.is_file():
            raise ScanError(f"{copy}: no cached index (run once without --offline)")
        raw = copy.read_bytes()
    else:
        request = urllib.request.Request(INDEX, headers={"Accept": ACCEPT})
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
        _write_atomic(copy, raw)
    files = json.loads(raw)["files"]
    return {
        f["filename"]: {"url": f["url"], "sha256": f["hashes"]["sha256"]}
        for f in files
        if f["filename"].endswith(".tar.gz") and not f.get("yanked") and "sha256" in f.get("hashes", {})
    }


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_sdist(version: str, index: dict[str, dict[str, str]], cache: Path, offline: bool) -> Path:
    name = f"vllm-{version}.tar.gz"
    entry = index.get(name)
    if entry is None:
        raise ScanError(f"vllm {version}: no sdist {name} on {INDEX}")
    target = cache / "sdists" / name
    if target.is_file():
        actual = _sha256(target)
        if actual == entry["sha256"]:
            return target
        if offline:
            raise ScanError(f"{target}: sha256 {actual} is not the index's {entry['sha256']}")
    elif offline:
        raise ScanError(f"{target}: not cached (run once without --offline)")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{name}.")
    digest = hashlib.sha256()
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry["url"], timeout=120) as response:
        while chunk := response.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != entry["sha256"]:
        os.unlink(tmp)
        raise ScanError(f"{entry['url']}: sha256 {digest.hexdigest()} is not the index's {entry['sha256']}")
    os.replace(tmp, target)
    return target


def _globs() -> list[str]:
    globs: set[str] = set()
    for cap in CAPABILITIES:
        for marker in (*cap.partial, *cap.present):
            globs.update(marker.glob.split("|"))
        globs.update(cap.cite)
    for info in INFOS:
        for marker in info.markers:
            globs.update(marker.glob.split("|"))
    return sorted(globs)


def read_members(tarball: Path) -> dict[str, str]:
    """Text of every member a marker's glob names, keyed by its path below the sdist's top directory."""
    globs, texts = _globs(), {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            if not member.isfile() or "/" not in member.name:
                continue
            rel = member.name.split("/", 1)[1]
            if not any(fnmatch.fnmatchcase(rel, g) for g in globs):
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                texts[rel] = handle.read().decode("utf-8", "replace")
    return texts


def find(marker: Marker, texts: dict[str, str]) -> Hit | None:
    """The first match of the marker (for an `absent` marker: a dummy hit when nothing matches)."""
    pattern = re.compile(marker.pattern)
    globs = marker.glob.split("|")
    for rel in sorted(texts):
        if not any(fnmatch.fnmatchcase(rel, g) for g in globs):
            continue
        match = pattern.search(texts[rel])
        if match:
            if marker.absent:
                return None
            line = texts[rel].count("\n", 0, match.start()) + 1
            return Hit(rel, line, texts[rel].splitlines()[line - 1].strip())
    return Hit("-", 0, f"no match for {marker.pattern!r}") if marker.absent else None


def all_hold(markers: tuple[Marker, ...], texts: dict[str, str]) -> list[Hit] | None:
    hits = [find(m, texts) for m in markers]
    return None if not markers or any(h is None for h in hits) else [h for h in hits if h is not None]


def scan(texts: dict[str, str]) -> dict[str, dict[str, object]]:
    result: dict[str, dict[str, object]] = {}
    for cap in CAPABILITIES:
        status, hits = "absent", None
        if (found := all_hold(cap.present, texts)) is not None:
            status, hits = "present", found
        elif (found := all_hold(cap.partial, texts)) is not None:
            status, hits = "partial", found
        cited = sorted({m for rel in cap.cite for m in PR_LINK.findall(texts.get(rel, ""))}, key=int)
        result[cap.key] = {
            "status": status,
            "evidence": [f"{h.file}:{h.line}: {h.text}" for h in hits or []],
            "cited_prs": cited,
        }
    for info in INFOS:
        found = all_hold(info.markers, texts)
        result[info.key] = {
            "status": "yes" if found is not None else "no",
            "evidence": [f"{h.file}:{h.line}: {h.text}" for h in found or []],
            "cited_prs": [],
        }
    return result


def render(results: dict[str, dict[str, dict[str, object]]], evidence: bool) -> str:
    versions = list(results)
    keys = [c.key for c in CAPABILITIES] + [i.key for i in INFOS]
    short = {"present": "**yes**", "partial": "partial", "absent": "-", "yes": "**yes**", "no": "-"}
    lines = ["| capability | " + " | ".join(versions) + " |", "|---" * (len(versions) + 1) + "|"]
    for key in keys:
        cells = [short[str(results[v][key]["status"])] for v in versions]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if evidence:
        for key in keys:
            lines.append(f"\n### {key}")
            previous: list[object] = []
            for v in versions:
                entry = results[v][key]
                shown = list(entry["evidence"]) if isinstance(entry["evidence"], list) else []
                if shown != previous:
                    lines.append(f"- {v} {entry['status']}: " + " / ".join(str(s) for s in shown))
                previous = shown
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=DEFAULT_VERSIONS, help="comma-separated vLLM releases")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="where sdists and the index copy go")
    parser.add_argument("--offline", action="store_true", help="use only the cached index and sdists")
    parser.add_argument("--json", dest="json_out", type=Path, help="write the statuses and evidence here")
    parser.add_argument("--check", type=Path, help="a --json output to compare the statuses with")
    parser.add_argument("--evidence", action="store_true", help="print the matching line per change")
    args = parser.parse_args(argv)
    try:
        index = load_index(args.cache, args.offline)
        results = {}
        for version in args.versions.split(","):
            tarball = fetch_sdist(version.strip(), index, args.cache, args.offline)
            results[version.strip()] = scan(read_members(tarball))
    except ScanError as error:
        print(f"absorption_scan: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"absorption_scan: {error}", file=sys.stderr)
        return 1
    print(render(results, args.evidence))
    if args.json_out:
        _write_atomic(args.json_out, (json.dumps(results, indent=1, sort_keys=True) + "\n").encode())
    if args.check:
        return _check(results, args.check)
    return 0


def _check(results: dict[str, dict[str, dict[str, object]]], expected_file: Path) -> int:
    try:
        expected = json.loads(expected_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        print(f"absorption_scan: {expected_file}: {error}", file=sys.stderr)
        return 1
    differences = [
        f"{expected_file}: {v} {key}: expected {want.get('status')}, found {results[v][key]['status']}"
        for v, caps in expected.items()
        if v in results
        for key, want in caps.items()
        if key in results[v] and want.get("status") != results[v][key]["status"]
    ]
    for line in differences:
        print(f"absorption_scan: {line}", file=sys.stderr)
    return 1 if differences else 0


if __name__ == "__main__":
    sys.exit(main())
