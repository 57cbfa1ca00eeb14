"""A wheel or sdist pair as a source: a stock and a forked archive diffed member by member (one unit)."""

from __future__ import annotations

import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from toolkit import tempnames
from toolkit.errors import VpatchError
from toolkit.git import TOOL_EMAIL, TOOL_NAME, Git, fast_import_path
from toolkit.importer.archives import Archive
from toolkit.importer.paths import resolve_files, unsafe_path
from toolkit.importer.units import FIXED_DATE, PLAIN_DIFF_ARGS, Source, Unit, parse_unit_diff

# Wheel members at least this large whose size and CRC-32 agree are taken as equal without reading
# them (the compiled extensions of a real vLLM wheel are hundreds of MB each).
LARGE_MEMBER = 8 << 20


class PairSource(Source):
    """A stock and a forked wheel (or sdist), diffed member by member."""

    def __init__(self, base: Archive, fork: Archive, project: str, scratch: Path) -> None:
        if base.kind != fork.kind:
            raise VpatchError(f"--base is a {base.kind} but --fork is a {fork.kind}; compare like with like")
        self.base = base
        self.fork = fork
        self.package = project.replace("-", "_")
        self.scratch = scratch
        self.kind = base.kind
        self.label = f"{fork.path.name} vs {base.path.name}"

    def describe(self) -> dict:
        return {"kind": self.kind, "label": self.label, "base": str(self.base.path), "fork": str(self.fork.path)}

    def units(self, tree: set[str], notes: list[str]) -> list[Unit]:
        self._open: list[zipfile.ZipFile] = []
        try:
            return self._units(tree)
        finally:
            for archive in self._open:
                archive.close()

    def _units(self, tree: set[str]) -> list[Unit]:
        skipped: list[str] = []
        base = self._members(self.base.path, skipped)
        fork = self._members(self.fork.path, [])
        changed = sorted(p for p in base.keys() | fork.keys() if _differs(base.get(p), fork.get(p)))
        if not changed:
            raise VpatchError(f"{self.fork.path.name} and {self.base.path.name} do not differ (outside metadata)")
        for path in changed:
            for side in (base.get(path), fork.get(path)):
                if side is not None and side.is_binary():
                    raise VpatchError(
                        f"binary difference in {path} between {self.fork.path.name} and {self.base.path.name}: "
                        "it cannot be carried as a patch",
                        path=self.fork.path,
                    )
        diff = self._git_diff(base, fork, changed)
        where = str(self.fork.path)
        files = parse_unit_diff(diff, where, 1)
        changes = resolve_files(files, tree, where, level=1)
        self.skipped = tuple(dict.fromkeys(skipped))
        origin = f"import, {self.kind} {self.fork.path.name} vs {self.base.path.name}"
        return [Unit(self.fork.path.name, where, origin, changes)]

    def _skip(self, name: str) -> str | None:
        top = name.split("/", 1)[0]
        if self.kind == "wheel":
            if top.endswith(".dist-info") or top.endswith(".data"):
                return f"{top}/ (wheel metadata and data)"
        elif name == "PKG-INFO":
            return "PKG-INFO (sdist metadata)"
        elif top.endswith(".egg-info"):
            return f"{top}/ (sdist metadata)"
        if name == f"{self.package}/_version.py":
            return f"{name} (generated at build time)"
        return None

    def _members(self, path: Path, skipped: list[str]) -> dict[str, Member]:
        if self.kind == "wheel":
            return self._wheel_members(path, skipped)
        return self._sdist_members(path, skipped)

    def _wheel_members(self, path: Path, skipped: list[str]) -> dict[str, Member]:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise VpatchError(f"not a wheel (zip) file: {exc}", path=path) from None
        self._open.append(archive)
        members: dict[str, Member] = {}
        for info in archive.infolist():
            name = info.filename
            if name.endswith("/"):
                continue
            problem = unsafe_path(name)
            if problem:
                raise VpatchError(f"unsafe wheel member: {problem}", path=path)
            why = self._skip(name)
            if why:
                skipped.append(why)
                continue
            mode = "100755" if (info.external_attr >> 16) & 0o111 else "100644"
            members[name] = Member(archive, info, None, mode)
        return members

    def _sdist_members(self, path: Path, skipped: list[str]) -> dict[str, Member]:
        from toolkit.sources.sdist import read_members

        members: dict[str, Member] = {}
        for name, mode, content in read_members(path):
            why = self._skip(name)
            if why:
                skipped.append(why)
                continue
            members[name] = Member(None, None, content, mode)
        return members

    def _git_diff(self, base: dict[str, Member], fork: dict[str, Member], changed: list[str]) -> bytes:
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix("pair"), dir=self.scratch) as tmp:
            repo = Git.init(Path(tmp) / "pair.git", bare=True)
            stream = bytearray()
            mark = 0
            sides = []
            for members in (base, fork):
                entries = []
                for path in changed:
                    member = members.get(path)
                    if member is None:
                        continue
                    content = member.read()
                    mark += 1
                    stream += b"blob\nmark :%d\ndata %d\n" % (mark, len(content)) + content + b"\n"
                    entries.append((path, member.mode, mark))
                sides.append(entries)
            for ref, entries, parent in (("refs/heads/base", sides[0], None), ("refs/heads/fork", sides[1], "base")):
                stream += (
                    f"commit {ref}\nauthor {TOOL_NAME} <{TOOL_EMAIL}> {FIXED_DATE}\n"
                    f"committer {TOOL_NAME} <{TOOL_EMAIL}> {FIXED_DATE}\ndata 0\n"
                ).encode()
                if parent:
                    stream += b"deleteall\n"
                for path, mode, number in entries:
                    stream += f"M {mode} :{number} {fast_import_path(path)}\n".encode("utf-8", "surrogateescape")
                stream += b"\n"
            stream += b"done\n"
            repo.fast_import(bytes(stream))
            return repo.diff("refs/heads/base", "refs/heads/fork", PLAIN_DIFF_ARGS)


@dataclass
class Member:
    archive: zipfile.ZipFile | None
    info: zipfile.ZipInfo | None
    content: bytes | None
    mode: str

    def read(self) -> bytes:
        if self.content is None:
            assert self.archive is not None and self.info is not None
            self.content = self.archive.read(self.info)
        return self.content

    def is_binary(self) -> bool:
        data = self.read()
        if b"\x00" in data[:8000]:
            return True
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return True
        return False


def _differs(a: Member | None, b: Member | None) -> bool:
    if a is None or b is None:
        return True
    if a.info is not None and b.info is not None:
        if (a.info.file_size, a.info.CRC) != (b.info.file_size, b.info.CRC):
            return True
        if a.info.file_size >= LARGE_MEMBER:
            return False
    return a.read() != b.read() or (a.mode != b.mode and a.info is None)
