"""Builders for the small synthetic upstreams the fast tests use: sdists, a local index, git repos."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.cli import main as vpatch_main
from toolkit.git import Git

if TYPE_CHECKING:
    from toolkit.project import Project

# what `vpatch import` needs for a plain diff or an archive pair, which carry no author or date
DIFF_AUTHORSHIP = ("--author", "Fork Dev <dev@fork.example>", "--date", "2025-04-01")
AUTHOR_ENV = {
    "GIT_AUTHOR_NAME": "Upstream Dev",
    "GIT_AUTHOR_EMAIL": "dev@upstream.example",
    "GIT_AUTHOR_DATE": "2024-03-01T12:00:00+00:00",
    "GIT_COMMITTER_DATE": "2024-03-01T12:00:00+00:00",
}


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


class LocalIndex:
    """A PEP 691 JSON simple index served over real HTTP on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files_dir = root / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.server: ThreadingHTTPServer | None = None
        self.overrides: dict[str, str] = {}  # filename -> sha256 the index claims instead

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}/simple"

    def add(self, path: Path) -> Path:
        target = self.files_dir / path.name
        if path != target:
            target.write_bytes(path.read_bytes())
        self._write_project_pages()
        return target

    def _write_project_pages(self) -> None:
        projects: dict[str, list[dict]] = {}
        for file in sorted(self.files_dir.iterdir()):
            project = file.name.split("-")[0].replace("_", "-")  # the normalized name the index is asked for
            projects.setdefault(project, []).append(
                {
                    "filename": file.name,
                    "url": f"../../files/{file.name}",
                    "hashes": {"sha256": self.overrides.get(file.name, sha256(file))},
                    "size": file.stat().st_size,
                }
            )
        for project, files in projects.items():
            page = self.root / "simple" / project
            page.mkdir(parents=True, exist_ok=True)
            (page / "index.html").write_text(
                json.dumps({"meta": {"api-version": "1.0"}, "name": project, "files": files})
            )

    def claim(self, filename: str, sha: str) -> None:
        self.overrides[filename] = sha
        self._write_project_pages()

    def start(self) -> None:
        handler = partial(_QuietHandler, directory=str(self.root))
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def git_repo(path: Path, tree: dict[str, str | bytes], *, tag: str | None = None, message: str = "initial") -> Git:
    """A work-tree repository with `tree` committed (and tagged)."""
    repo = Git.init(path)
    commit_tree(repo, tree, message=message)
    if tag:
        repo.run("tag", "-a", tag, "-m", tag, env=AUTHOR_ENV)
    return repo


def commit_tree(repo: Git, tree: dict[str, str | bytes], *, message: str) -> str:
    for name, content in tree.items():
        file = repo.path / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(content.encode() if isinstance(content, str) else content)
    repo.run("add", "-A")
    repo.run("commit", "-q", "-m", message, env=AUTHOR_ENV)
    return repo.out("rev-parse", "HEAD")


class Workspace:
    """A vpatch project in a tmp dir with its own cache and index; `run` calls the CLI in-process."""

    def __init__(self, root: Path, cache: Path, index: LocalIndex) -> None:
        self.root = root
        self.cache = cache
        self.index = index
        (root / "patches").mkdir(parents=True, exist_ok=True)

    @property
    def patches(self) -> Path:
        return self.root / "patches"

    def run(self, *args: str) -> int:
        return vpatch_main(
            ["--root", str(self.root), "--cache-dir", str(self.cache), "--index-url", self.index.url, *args]
        )

    def publish(
        self, version: str, tree: dict[str, str | bytes] | None = None, *, wheel: bool = True, **kwargs
    ) -> Path:
        """Publish an sdist (and a stock wheel whose vllm/ files match it) on the local index."""
        sdist = self.index.add(make_sdist(self.root / "build", version, tree, **kwargs))
        if wheel:
            source = tree if tree is not None else default_tree(version)
            shipped = {k: v for k, v in source.items() if k.startswith("vllm/")}
            self.index.add(make_wheel(self.root / "build", version, shipped))
        return sdist

    def series_dir(self, version: str) -> Path:
        return self.patches / f"vllm-{version}"

    def write_series(self, version: str, patches: dict[str, bytes], comment: str = "# test series") -> Path:
        directory = self.series_dir(version)
        directory.mkdir(parents=True, exist_ok=True)
        for name, data in patches.items():
            (directory / name).write_bytes(data)
        (directory / "series").write_text(comment + "\n" + "".join(f"{n}\n" for n in patches))
        return directory

    def checkout(self, version: str) -> Path:
        return self.root / "checkouts" / f"vllm-{version}"

    def snapshot(self) -> dict[str, bytes]:
        """Every file under patches/, for asserting that a failed command changed nothing."""
        return {
            str(p.relative_to(self.patches)): p.read_bytes() for p in sorted(self.patches.rglob("*")) if p.is_file()
        }


def commit_in(
    checkout: Path,
    changes: dict[str, str],
    *,
    subject: str,
    body: str = "",
    headers: str = "Upstream-Status: Pending\nFeature: kv-routing",
) -> str:
    """Make a patch commit in a checkout the way a maintainer would."""
    repo = Git(checkout)
    for name, content in changes.items():
        file = checkout / name
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(content)
    repo.run("add", "-A")
    message = subject + "\n\n" + (body + "\n\n" if body else "") + headers + "\n"
    repo.run("commit", "-q", "-F", "-", input=message.encode(), env=AUTHOR_ENV)
    return repo.out("rev-parse", "HEAD")


@contextmanager
def env_var(key: str, value: str) -> Iterator[None]:
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def run_vpatch(
    root: Path, *args: str, expect: int = 0, timeout: float = 1800, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The `vpatch` console script as CI runs it, in a process of its own; asserts its exit code."""
    vpatch = Path(sys.executable).with_name("vpatch")
    proc = subprocess.run(
        [str(vpatch), "--root", str(root), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def assert_series_round_trips(project, pin, tmp_path: Path) -> None:
    """The committed series of `pin` applies to its pinned base clean, patch by patch, and exporting the
    result writes exactly the committed files again."""
    from toolkit.apply import apply_series
    from toolkit.export import plan_export

    series = project.series(pin)
    with project.scratch_checkout(pin) as checkout:
        assert checkout.base_commit == pin.base_commit
        result = apply_series(checkout, series)
        assert result.ok, result.outcomes
        assert [o.status for o in result.outcomes] == ["clean"] * len(series.patches)
        copy = tmp_path / "series"
        shutil.copytree(series.directory, copy)
        plan = plan_export(checkout, copy)
        assert plan.changes() == {}
        for name, data in plan.patches:
            assert (series.directory / name).read_bytes() == data, name
        assert plan.series_text == (series.directory / "series").read_text(encoding="utf-8")


# ---------------------------------------------------------------- real vLLM venvs (integration tests)


def stock_env_of(project: Project, version: str) -> Path:
    """A venv with the pinned stock vLLM wheel of `version` (cached)."""
    from toolkit.conformance.envs import vllm_env
    from toolkit.index import fetch_artifact

    pin = project.pins.get(version)
    wheel = fetch_artifact(project.options.cache_dir, pin.wheels[0])
    return vllm_env(project.options.cache_dir, wheel, sha256=pin.wheels[0].sha256)


def patched_wheel_of(project: Project, version: str, out: Path) -> Path:
    """The dynamo-base overlay wheel of the committed series of `version`."""
    from toolkit.wheel.overlay import build_overlay

    return build_overlay(project, project.pins.get(version), out).path
