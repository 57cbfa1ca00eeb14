"""The package index (PEP 691 JSON simple API) and verified downloads into the cache.

Downloads go straight to files by URL; no build backend ever runs to find them.
Every file is hashed while it streams and renamed into the cache only when its
sha256 equals the expected one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from toolkit import faults, tempnames
from toolkit.cache import (
    HASH_CHUNK,
    locked,
    mark_verified,
    sha256_file,
    stat_stamp,
    still_verified,
    verified_stamp,
)
from toolkit.errors import VpatchError
from toolkit.model import Artifact

USER_AGENT = "vpatch (+https://github.com/ai-dynamo/dynamo)"
RETRIES = 3


@dataclass(frozen=True)
class IndexFile:
    filename: str
    sha256: str
    url: str
    size: int | None


def _open(url: str, accept: str | None = None):
    import urllib.request  # with http.client and ssl: only when something is downloaded

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **({"Accept": accept} if accept else {})})
    return urllib.request.urlopen(request, timeout=120)


def list_release_files(index_url: str, project: str, version: Version) -> list[IndexFile]:
    """Files of one release from the index's JSON simple API, with the index's own sha256."""
    return [f for v, f in list_project_files(index_url, project) if v == version]


def list_project_files(index_url: str, project: str) -> list[tuple[Version, IndexFile]]:
    """(version, file) for every unyanked sdist and wheel of `project` the index lists with a sha256."""
    # Here only (a network call anyway): packaging.utils loads packaging.tags, which a warm build never needs.
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        canonicalize_name,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    url = f"{index_url}/{canonicalize_name(project)}/"
    try:
        with _open(url, "application/vnd.pypi.simple.v1+json") as response:
            payload = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise VpatchError(f"cannot read the package index at {url}: {exc}") from None
    found = []
    for entry in payload.get("files", []):
        name = entry.get("filename", "")
        try:
            if name.endswith(".whl"):
                _, file_version, _, _ = parse_wheel_filename(name)
            elif name.endswith(".tar.gz"):
                _, file_version = parse_sdist_filename(name)
            else:
                continue
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if entry.get("yanked"):
            continue
        sha = entry.get("hashes", {}).get("sha256")
        if not sha:
            continue
        file_url = urllib.parse.urljoin(url, entry["url"])
        found.append((file_version, IndexFile(name, sha, file_url, entry.get("size"))))
    return found


def cached_path(cache_dir: Path, artifact: Artifact) -> Path:
    return cache_dir / "downloads" / artifact.sha256 / artifact.file


def fetch_artifact(cache_dir: Path, artifact: Artifact, *, quiet: bool = False, rehash: bool = False) -> Path:
    """The verified local copy of `artifact`, downloading it if the cache lacks a good one.

    A cached file is hashed in full when it was never verified or has been written to since
    (its size, mtime, ctime or inode changed); `rehash` forces the full hash (pin verify, check).
    """
    target = cached_path(cache_dir, artifact)
    with locked(target):
        if target.exists():
            if not rehash and still_verified(target, artifact.sha256):
                return target
            tempnames.sweep(target.parent)  # a stamp's temp file of a run killed before its rename
            before = stat_stamp(target)
            actual = sha256_file(target)
            if actual == artifact.sha256:
                if stat_stamp(target) == before:  # not written to while it was being hashed
                    mark_verified(target, actual)
                return target
            # A damaged cache entry is never used: drop it and download again.
            target.unlink()
            verified_stamp(target).unlink(missing_ok=True)
        if not artifact.url:
            raise VpatchError(f"{artifact.file}: not in the cache and the pin has no download URL")
        _download(artifact, target, quiet=quiet)
        mark_verified(target, artifact.sha256)
    return target


def _download(artifact: Artifact, target: Path, *, quiet: bool) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    target.parent.mkdir(parents=True, exist_ok=True)
    tempnames.sweep(target.parent)  # .part files of killed downloads
    last_error: Exception | None = None
    for attempt in range(RETRIES):
        fd, tmp_name = tempfile.mkstemp(prefix=tempnames.prefix(artifact.file), suffix=".part", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, _open(artifact.url) as response:
                total = int(response.headers.get("Content-Length") or 0) or None
                show = not quiet and sys.stderr.isatty() and (total or 0) > 4 << 20
                with Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    DownloadColumn(),
                    TransferSpeedColumn(),
                    transient=True,
                    disable=not show,
                ) as progress:
                    task = progress.add_task(f"download {artifact.file}", total=total)
                    while chunk := response.read(HASH_CHUNK):
                        out.write(chunk)
                        faults.reached("download.part")
                        digest.update(chunk)
                        progress.advance(task, len(chunk))
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != artifact.sha256:
                raise VpatchError(
                    f"{artifact.file}: sha256 mismatch: pinned {artifact.sha256}, downloaded {actual} "
                    f"(from {artifact.url})"
                )
            os.replace(tmp, target)
            return
        except VpatchError:
            raise
        except urllib.error.HTTPError as exc:
            if 400 <= exc.code < 500:  # the index said no: asking again will not change that
                raise VpatchError(f"{artifact.file}: download failed from {artifact.url}: {exc}") from None
            last_error = exc
            time.sleep(1 + attempt)
        except (urllib.error.URLError, OSError) as exc:
            last_error = exc
            time.sleep(1 + attempt)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    raise VpatchError(f"{artifact.file}: download failed from {artifact.url}: {last_error}")
