"""What vLLM an interpreter has: stock or dynamo-base, which patches and features, and whether it is intact.

The probe runs inside the target interpreter (which need not have vpatch) and never
imports vLLM (that needs a GPU platform, torch and more). It reads the installed
distribution's files: the provenance a dynamo-base wheel carries, RECORD, and the
installed bytes. Every file a patch changed must hash as RECORD says (the code
really is the patched code), and every compiled file must hash as the pinned stock
wheel's did.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from toolkit import exit_codes
from toolkit.errors import VpatchError
from toolkit.features import is_sub, parent_of, sub_of

# Exit codes a launcher can branch on (the CLI's one table names them).
EXIT_PATCHED = exit_codes.OK
EXIT_STOCK = exit_codes.DOCTOR_STOCK
EXIT_DAMAGED = exit_codes.DOCTOR_DAMAGED
EXIT_MISSING = exit_codes.DOCTOR_MISSING

PROBE = r"""
import base64, hashlib, json, sys
import importlib.metadata as md
from pathlib import Path

wanted = sys.argv[1]
found = None
for dist in md.distributions():
    top = (dist.read_text("top_level.txt") or "").split()
    files = dist.files or []
    if wanted in top or any(str(f).startswith(wanted + "/") for f in files[:50]):
        found = dist
        break
if found is None:
    print(json.dumps({"installed": False, "python": sys.executable}))
    raise SystemExit(0)

def digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

record = {}
for f in found.files or []:
    if f.hash is not None and f.hash.mode == "sha256":
        record[str(f)] = base64.urlsafe_b64decode(f.hash.value + "==").hex()
provenance = None
text = found.read_text("dynamo_base.json")
if text:
    provenance = json.loads(text)
root = Path(found.locate_file(""))
checks = {}
wanted_files = set()
if provenance:
    wanted_files |= set(provenance["files"]["modified"]) | set(provenance["files"]["added"])
    wanted_files |= set(provenance.get("compiled", {}))
else:
    wanted_files |= {p for p in record if p.endswith((".so", ".pyd"))}
for rel in sorted(wanted_files):
    path = root / rel
    checks[rel] = digest(path) if path.exists() else None
print(json.dumps({
    "installed": True,
    "python": sys.executable,
    "name": found.metadata["Name"],
    "version": found.version,
    "location": str(root),
    "provenance": provenance,
    "record": {k: v for k, v in record.items() if k in wanted_files},
    "hashes": checks,
}))
"""


@dataclass
class Diagnosis:
    python: str
    state: str  # "dynamo-base" | "stock" | "damaged" | "missing"
    name: str = ""
    version: str = ""
    location: str = ""
    patches: list[dict] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"dynamo-base": EXIT_PATCHED, "stock": EXIT_STOCK, "damaged": EXIT_DAMAGED}.get(self.state, EXIT_MISSING)

    def as_dict(self) -> dict:
        return {**self.__dict__, "exit_code": self.exit_code}


def interpreter(python: str) -> str:
    """`--python` as a path to run, refused in one line when it cannot be an interpreter."""
    if os.sep not in python:  # a command name, looked up on PATH
        found = shutil.which(python)
        if found is None:
            raise VpatchError(f"no interpreter at {python}")
        python = found
    path = Path(python)
    if not path.exists():
        raise VpatchError("no interpreter here (the path does not exist)", path=path)
    if path.is_dir():
        raise VpatchError("--python names a directory, not an interpreter (for a venv: DIR/bin/python)", path=path)
    if not os.access(path, os.X_OK):
        raise VpatchError("--python names a file that is not executable", path=path)
    return python


def probe(python: str, package: str = "vllm") -> dict:
    python = interpreter(python)
    try:
        proc = subprocess.run([python, "-c", PROBE, package], capture_output=True, text=True, timeout=300)
    except OSError as exc:  # e.g. an executable that is no program (ENOEXEC)
        raise VpatchError(f"--python cannot be run: {exc.strerror}", path=python) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpatchError(f"the probe failed in {python}: {last}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def diagnose(python: str | None, features: dict[str, dict], package: str = "vllm") -> Diagnosis:
    data = probe(python or sys.executable, package)
    if not data["installed"]:
        return Diagnosis(data["python"], "missing", problems=[f"no distribution provides the {package} package"])
    result = Diagnosis(data["python"], "stock", data["name"], data["version"], data["location"])
    provenance = data["provenance"]
    hashes, record = data["hashes"], data["record"]
    if provenance is None:
        for rel, actual in hashes.items():
            if actual is not None and record.get(rel) not in (None, actual):
                result.problems.append(f"{rel} does not match the distribution's RECORD")
        from packaging.version import Version

        installed = Version(data["version"]).release
        lacking_parts: dict[str, list[str]] = {}  # parent -> its sub-features stock lacks, one warning each
        for name, info in sorted(features.items()):
            native = info.get("native_since")
            if native is None or Version(native).release > installed:
                if is_sub(name):
                    lacking_parts.setdefault(parent_of(name), []).append(sub_of(name) or "")
                    continue
                since = f" (upstream has it from {native})" if native else ""
                result.warnings.append(f"stock {package} {data['version']} lacks the {name} feature{since}")
            elif not is_sub(name):
                result.features.append(name)
        for parent, parts in lacking_parts.items():
            result.warnings.append(f"stock {package} {data['version']} lacks parts of {parent}: {', '.join(parts)}")
        if result.problems:
            result.state = "damaged"
        return result
    result.state = "dynamo-base"
    result.patches = provenance["series"]["patches"]
    result.features = provenance["series"]["features"]
    files = provenance["files"]
    for rel in [*files["modified"], *files["added"]]:
        if hashes.get(rel) is None:
            result.problems.append(f"{rel} (changed by the series) is not installed")
        elif record.get(rel) != hashes[rel]:
            result.problems.append(f"{rel} (changed by the series) differs from the wheel's RECORD")
    for rel, expected in provenance.get("compiled", {}).items():
        actual = hashes.get(rel)
        if actual is None:
            result.problems.append(f"compiled file {rel} is missing")
        elif actual != expected:
            result.problems.append(f"compiled file {rel} differs from the pinned stock wheel")
    if result.problems:
        result.state = "damaged"
    return result
