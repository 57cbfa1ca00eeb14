"""Synthetic vLLM releases: source trees, sdists and stock-like wheels built in tmp dirs."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path


def module_text(name: str, lines: int = 40) -> str:
    """A Python module with enough numbered lines for hunks to have context."""
    body = [f'"""Module {name}."""', ""]
    body += [f"VALUE_{i} = {i}  # {name} line {i}" for i in range(1, lines + 1)]
    return "\n".join(body) + "\n"


def version_file(version: str) -> str:
    return f"__version__ = version = {version!r}\n__version_tuple__ = version_tuple = (1, 0)\n"


def package_files(version: str) -> dict[str, str]:
    """The Python files both the sdist and the stock wheel ship under vllm/."""
    return {
        "vllm/__init__.py": "from vllm._version import __version__, __version_tuple__  # noqa: F401\n",
        "vllm/_version.py": version_file(version),
        "vllm/core/__init__.py": "",
        "vllm/core/scheduler.py": module_text("scheduler"),
        "vllm/core/block_pool.py": module_text("block_pool"),
        "vllm/engine/__init__.py": "",
        "vllm/engine/args.py": module_text("args"),
    }


def default_tree(version: str) -> dict[str, str | bytes]:
    return {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n",
        "setup.py": "from setuptools import setup\nsetup()\n",
        "csrc/ops.cu": "__global__ void kernel() {}\n",
        "tests/test_core.py": "def test_nothing():\n    pass\n",
        **package_files(version),
        "README.md": "# vllm\n",
    }


WHEEL_TAG = "cp38-abi3-manylinux1_x86_64"


def compiled_blob(size: int = 300_000, seed: int = 7) -> bytes:
    """Deterministic incompressible bytes standing in for a compiled extension."""
    import random

    return random.Random(seed).randbytes(size)


def make_wheel(
    directory: Path,
    version: str,
    files: dict[str, str | bytes] | None = None,
    *,
    extra: dict[str, bytes] | None = None,
    project: str = "vllm",
) -> Path:
    """A stock-like binary wheel: Python files, a compiled member, dist-info with a CSV RECORD."""
    import base64
    import csv
    import zipfile

    files = dict(files if files is not None else package_files(version))
    files["vllm/_C.abi3.so"] = compiled_blob()
    files.update(extra or {})
    dist_info = f"{project}-{version}.dist-info"
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {project}\nVersion: {version}\nSummary: a synthetic vLLM\n\nLong description.\n"
    )
    files[f"{dist_info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: false\nTag: cp38-abi3-linux_x86_64\n\n"
    )
    files[f"{dist_info}/top_level.txt"] = "vllm\n"
    rows = []
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        rows.append((name, f"sha256={digest}", str(len(data))))
    rows.append((f"{dist_info}/RECORD", "", ""))
    record = io.StringIO()
    csv.writer(record, lineterminator="\n").writerows(rows)
    files[f"{dist_info}/RECORD"] = record.getvalue()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{project}-{version}-{WHEEL_TAG}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            info = zipfile.ZipInfo(name, date_time=(2024, 1, 2, 3, 4, 6))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o100755 if name.endswith(".so") else 0o100644) << 16
            archive.writestr(info, content)
    return path


def zip_of(path: Path, members: dict[str, str]) -> Path:
    """A plain zip (e.g. a wheel's members only, no RECORD or metadata checks) of `members`, at `path`."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return path


def make_sdist(
    directory: Path,
    version: str,
    tree: dict[str, str | bytes] | None = None,
    *,
    project: str = "vllm",
    extra_members: list[tuple[tarfile.TarInfo, bytes | None]] | None = None,
) -> Path:
    """A gzip'd sdist `project-version.tar.gz` with one top-level directory, like setuptools makes."""
    tree = tree if tree is not None else default_tree(version)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{project}-{version}.tar.gz"
    prefix = f"{project}-{version}"
    with tarfile.open(path, "w:gz") as archive:
        top = tarfile.TarInfo(prefix)
        top.type = tarfile.DIRTYPE
        top.mode = 0o755
        archive.addfile(top)
        for name, content in sorted(tree.items()):
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(f"{prefix}/{name}")
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            info.mtime = 1700000000
            archive.addfile(info, io.BytesIO(data))
        for info, data in extra_members or []:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
