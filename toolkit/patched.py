"""The files a series changes, applied in a throw-away index instead of a work tree.

An overlay build only needs the patched contents of the few files the series
touches. Applying each patch with `git apply --cached` to a temporary index over
the cached base repository (new objects go to a temporary object directory, so the
cache entry is never written) avoids cloning and checking out the whole tree. The
result is cached by base commit and series fingerprint, so rebuilding an unchanged
series does not run git at all.
"""

from __future__ import annotations

import base64
import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from toolkit import tempnames
from toolkit.cache import atomic_write_text, locked
from toolkit.errors import VpatchError
from toolkit.git import Git
from toolkit.model import Series
from toolkit.sources import Base

FORMAT = 2  # 2: paths verbatim (1 kept non-ASCII paths C-quoted)


@dataclass(frozen=True)
class PatchedFiles:
    base_commit: str
    changes: tuple[tuple[str, str], ...]  # (status A / M / D, path), as git diff-index reports them
    contents: dict[str, bytes]  # patched content of added and modified paths
    base_blobs: dict[str, str]  # base blob id of modified and deleted paths
    symlinks: tuple[str, ...] = ()  # added or modified paths that are symlinks (mode 120000) afterwards

    def to_json(self) -> str:
        payload = {
            "format": FORMAT,
            "base_commit": self.base_commit,
            "changes": [list(c) for c in self.changes],
            "contents": {k: base64.b64encode(v).decode() for k, v in sorted(self.contents.items())},
            "base_blobs": dict(sorted(self.base_blobs.items())),
            "symlinks": list(self.symlinks),
        }
        body = json.dumps(payload, sort_keys=True)
        return json.dumps({"sha256": hashlib.sha256(body.encode()).hexdigest(), "payload": payload}) + "\n"

    @classmethod
    def from_json(cls, text: str) -> PatchedFiles | None:
        """None when the entry is damaged or of another format."""
        try:
            data = json.loads(text)
            payload = data["payload"]
            if hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest() != data["sha256"]:
                return None
            if payload["format"] != FORMAT:
                return None
            return cls(
                payload["base_commit"],
                tuple((s, p) for s, p in payload["changes"]),
                {k: base64.b64decode(v) for k, v in payload["contents"].items()},
                dict(payload["base_blobs"]),
                tuple(payload["symlinks"]),
            )
        except (ValueError, KeyError, TypeError):
            return None


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def apply_in_index(base: Base, series: Series, scratch_root: Path) -> PatchedFiles:
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=tempnames.prefix("index"), dir=scratch_root) as tmp:
        objects = Path(tmp) / "objects"
        objects.mkdir()
        env = {
            "GIT_INDEX_FILE": str(Path(tmp) / "index"),
            "GIT_OBJECT_DIRECTORY": str(objects),
            "GIT_ALTERNATE_OBJECT_DIRECTORIES": str(base.repo / "objects"),
        }
        repo = Git(base.repo)
        repo.run("read-tree", base.commit, env=env)
        for patch in series.patches:
            proc = repo.run("apply", "--cached", str(patch.path), env=env, check=False)
            if proc.returncode != 0:
                from toolkit.apply import describe_apply_failure  # only on failure

                details = describe_apply_failure(patch, proc.stderr.decode("utf-8", "replace"))
                raise VpatchError(f"does not apply to {base.label}: {'; '.join(details)}", path=patch.path)
        # -z: paths verbatim (UTF-8), not C-quoted the way core.quotepath prints non-ASCII names
        raw = repo.run(
            "diff-index", "--cached", "--raw", "-z", "--no-abbrev", "--no-renames", base.commit, env=env
        ).stdout
        fields = raw.split(b"\0")
        changes, new_ids, base_blobs, symlinks = [], {}, {}, []
        for meta_bytes, path_bytes in zip(fields[0::2], fields[1::2], strict=False):
            if not meta_bytes:
                continue
            path = path_bytes.decode("utf-8", "surrogateescape")
            _, new_mode, old_id, new_id, status = meta_bytes.decode().lstrip(":").split()
            changes.append((status[0], path))
            if status[0] in ("A", "M", "T"):
                new_ids[path] = new_id
                if new_mode == "120000":
                    symlinks.append(path)
            if status[0] in ("M", "T", "D"):
                base_blobs[path] = old_id
        contents: dict[str, bytes] = {}
        if new_ids:
            request = "".join(f"{blob}\n" for blob in new_ids.values()).encode()
            output = repo.run("cat-file", "--batch", input=request, env=env).stdout
            position = 0
            for path, blob in new_ids.items():
                header_end = output.index(b"\n", position)
                header = output[position:header_end].split()
                if header[0].decode() != blob:
                    raise VpatchError(f"git cat-file returned {header[0].decode()} for {blob}")
                size = int(header[2])
                contents[path] = output[header_end + 1 : header_end + 1 + size]
                position = header_end + 1 + size + 1
    return PatchedFiles(base.commit, tuple(changes), contents, base_blobs, tuple(symlinks))


def patched_files(base: Base, series: Series, cache_dir: Path) -> PatchedFiles:
    """`apply_in_index`, cached by base commit and series fingerprint (the patches' full contents)."""
    key = hashlib.sha256(f"{base.commit}\0{series.fingerprint()}\0{FORMAT}".encode()).hexdigest()[:32]
    entry = cache_dir / "patched" / f"{key}.json"
    with locked(entry):
        if entry.is_file():
            cached = PatchedFiles.from_json(entry.read_text(encoding="utf-8"))
            if cached is not None and cached.base_commit == base.commit:
                return cached
        result = apply_in_index(base, series, cache_dir / "tmp")
        atomic_write_text(entry, result.to_json())
    return result
