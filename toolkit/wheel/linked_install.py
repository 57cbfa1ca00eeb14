"""Install a dynamo-base wheel into a fresh venv as a thin layer over a venv holding its stock wheel.

An overlay wheel differs from the stock wheel it was made from in a handful of files (the series' changes and
the dist-info); a full install unpacks all ~300 MB of it again and compiles every module. Here each member
whose RECORD row (sha256 and size) equals the row of the same path in the stock venv's installed RECORD is
a hard link of the stock venv's file (with its `__pycache__` entries: a timestamp .pyc checks its source's
mtime and size, which a hard link shares), and only the other members are written from the wheel. The
dist-info is the wheel's, with an INSTALLER, the console scripts and an installed RECORD, as pip writes
them, so that pip and importlib.metadata see the dynamo-base distribution and its version.

The stock venv is never written: directories are made anew in the layer (a file added there lands in the
layer only), nothing outside the stock venv's RECORDs is linked (its `.pth` files, which `layer_on`
rewrites in place, stay its own), and what replaces a linked file (an import writing a .pyc, pip
reinstalling) writes a new file and renames it over the link. A wheel this cannot lay out (a `.data`
directory, members without a RECORD row, another file system) raises NotLinkable, and the caller installs
it the ordinary way.
"""

from __future__ import annotations

import configparser
import csv
import io
import os
import shutil
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from toolkit.cache import locked
from toolkit.wheel.record import record_hash, record_text

INSTALLER = "vpatch\n"


class NotLinkable(Exception):
    """The wheel cannot be laid out as links over the stock venv; the message says why."""


@dataclass
class LinkedInstall:
    """What `link_install` did: the members linked from the stock venv and the ones written from the wheel."""

    dist_info: str
    linked: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    pycache_linked: int = 0

    def summary(self) -> str:
        return (
            f"{len(self.linked)} files hard-linked from the stock venv ({self.pycache_linked} .pyc with them), "
            f"{len(self.written)} written from the wheel"
        )


def site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def installed_rows(site: Path) -> dict[str, tuple[str, str]]:
    """path -> (hash, size) from every installed RECORD in `site` (paths relative to `site`)."""
    rows: dict[str, tuple[str, str]] = {}
    for record in sorted(site.glob("*.dist-info/RECORD")):
        for row in csv.reader(io.StringIO(record.read_text(encoding="utf-8"))):
            if len(row) >= 3 and row[1]:
                rows[row[0]] = (row[1], row[2])
    return rows


def _safe(name: str) -> str:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise NotLinkable(f"member {name!r} would land outside site-packages")
    return name


def _wheel_layout(archive: zipfile.ZipFile) -> tuple[str, dict[str, tuple[str, str]], list[zipfile.ZipInfo]]:
    """The wheel's dist-info directory, its RECORD rows and its file members (RECORD itself left out)."""
    members = [info for info in archive.infolist() if not info.is_dir()]
    tops = {info.filename.split("/")[0] for info in members}
    dist_infos = sorted(t for t in tops if t.endswith(".dist-info"))
    if len(dist_infos) != 1:
        raise NotLinkable(f"the wheel has {len(dist_infos)} .dist-info directories")
    if any(t.endswith(".data") for t in tops):
        raise NotLinkable("the wheel has a .data directory (scripts or headers an installer places)")
    dist_info = dist_infos[0]
    record_name = f"{dist_info}/RECORD"
    rows: dict[str, tuple[str, str]] = {}
    for row in csv.reader(io.StringIO(archive.read(record_name).decode("utf-8"))):
        if len(row) >= 3:
            rows[row[0]] = (row[1], row[2])
    files = [info for info in members if info.filename != record_name]
    unlisted = [info.filename for info in files if not rows.get(info.filename, ("", ""))[0]]
    if unlisted:
        raise NotLinkable(f"the wheel's RECORD has no hash for {unlisted[0]}")
    return dist_info, rows, files


class _Pycache:
    """The `__pycache__` entries of the stock venv, listed once per directory."""

    def __init__(self, site: Path) -> None:
        self.site = site
        self.listed: dict[PurePosixPath, dict[str, list[str]]] = {}

    def of(self, name: str) -> list[str]:
        """The stock .pyc paths (relative to site-packages) compiled from the source `name`."""
        source = PurePosixPath(name)
        directory = source.parent / "__pycache__"
        if directory not in self.listed:
            by_module: dict[str, list[str]] = {}
            try:
                entries = os.listdir(self.site / directory)
            except OSError:
                entries = []
            for entry in entries:
                if entry.endswith(".pyc"):
                    by_module.setdefault(entry.split(".")[0], []).append(str(directory / entry))
            self.listed[directory] = by_module
        return self.listed[directory].get(source.stem, [])


def link_install(wheel: Path, venv: Path, stock_venv: Path) -> LinkedInstall:
    """Install `wheel` into the fresh `venv` as links of `stock_venv`'s unchanged files plus the wheel's other
    members, with a RECORD as pip writes it. Raises NotLinkable before writing anything the caller would keep
    (the caller removes `venv` on any error)."""
    site, stock_site = site_packages(venv), site_packages(stock_venv)
    with locked(stock_venv), zipfile.ZipFile(wheel) as archive:  # the stock venv is not rebuilt meanwhile
        dist_info, rows, files = _wheel_layout(archive)
        stock = installed_rows(stock_site)
        if not stock:
            raise NotLinkable(f"{stock_site} holds no installed RECORD")
        site.mkdir(parents=True, exist_ok=True)
        done = LinkedInstall(dist_info)
        made: set[Path] = {site}
        pycache = _Pycache(stock_site)
        for info in files:
            name = _safe(info.filename)
            target = site / name
            _parents(target, made)
            source = stock_site / name
            same = (
                not name.startswith(dist_info + "/")
                and stock.get(name) == rows[name]
                and rows[name][1] == str(info.file_size)
                and _size(source) == info.file_size
            )
            if same:
                _link(source, target)
                done.linked.append(name)
                if name.endswith(".py"):
                    for pyc in pycache.of(name):
                        _parents(site / pyc, made)
                        _link(stock_site / pyc, site / pyc)
                        done.pycache_linked += 1
            else:
                _write(archive, info, target)
                done.written.append(name)
        if not done.linked:  # another distribution (a plugin wheel): nothing to share, the installer places it
            raise NotLinkable(f"{wheel.name} has no file in common with {stock_venv}")
        extra = _finish_dist_info(archive, venv, site, dist_info)
        record = [(name, *rows[name]) for name in (info.filename for info in files)]
        record += [*extra, (f"{dist_info}/RECORD", "", "")]
        (site / dist_info / "RECORD").write_bytes(record_text(record))
    return done


def _parents(target: Path, made: set[Path]) -> None:
    parent = target.parent
    if parent not in made:
        parent.mkdir(parents=True, exist_ok=True)
        made.add(parent)


def _size(path: Path) -> int | None:
    try:
        return path.lstat().st_size if path.is_file() and not path.is_symlink() else None
    except OSError:
        return None


def _link(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as error:  # another file system, or one without hard links
        raise NotLinkable(f"cannot hard-link {source}: {error.strerror}") from None


def _write(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    mode = (info.external_attr >> 16) & 0o777
    with archive.open(info) as src, target.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    # executable bits as the wheel says (what pip keeps); everything else readable, as pip writes it
    os.chmod(target, 0o755 if mode & 0o111 else 0o644)


def _finish_dist_info(archive: zipfile.ZipFile, venv: Path, site: Path, dist_info: str) -> list[tuple[str, str, str]]:
    """INSTALLER and the console scripts, as installers add them; their RECORD rows."""
    rows = []
    installer = site / dist_info / "INSTALLER"
    installer.write_text(INSTALLER, encoding="utf-8")
    rows.append((f"{dist_info}/INSTALLER", record_hash(INSTALLER.encode()), str(len(INSTALLER))))
    try:
        text = archive.read(f"{dist_info}/entry_points.txt").decode("utf-8")
    except KeyError:
        return rows
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # script names keep their case
    parser.read_string(text)
    if not parser.has_section("console_scripts"):
        return rows
    bin_dir = venv / "bin"
    for script, target in parser.items("console_scripts"):
        module, _, attr = target.strip().partition(":")
        attr = attr.split("[")[0].strip()
        if not attr:
            raise NotLinkable(f"console script {script} names a module, not a callable: {target.strip()}")
        body = _launcher(venv, module.strip(), attr)
        path = bin_dir / script
        path.write_bytes(body)
        os.chmod(path, 0o755)
        rows.append((os.path.relpath(path, site), record_hash(body), str(len(body))))
    return rows


def _launcher(venv: Path, module: str, attr: str) -> bytes:
    """A console script as pip writes one (the interpreter of `venv`, the entry point's callable)."""
    first = attr.split(".")[0]
    return (
        f"#!{venv / 'bin' / 'python'}\n"
        "import re\nimport sys\n"
        f"from {module} import {first}\n"
        "if __name__ == '__main__':\n"
        "    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n"
        f"    sys.exit({attr}())\n"
    ).encode()


def install_over(venv: Path, wheel: Path, stock_venv: Path | None, *, installer: str = "auto") -> dict:
    """`wheel` into the fresh `venv` (`--no-deps`), its new modules compiled: linked over `stock_venv` when it
    is given and the wheel allows, else installed by `installer` and compiled whole. Returns how, for the
    venv's stamp: {"linked": N, "written": M, "over": stock venv} or {"full_install": why}."""
    from toolkit.envs import compile_bytecode, create_venv, install

    why = "no stock venv to link from"
    if stock_venv is not None:
        try:
            done = link_install(wheel, venv, stock_venv)
        except NotLinkable as error:
            why = str(error)
            shutil.rmtree(venv)  # whatever was laid out goes: the ordinary install starts from a fresh venv
            create_venv(venv)
        else:
            site = site_packages(venv)
            compile_bytecode(venv, [site / name for name in done.written if name.endswith(".py")])
            return {"linked": len(done.linked), "written": len(done.written), "over": str(stock_venv)}
    install(venv, [str(wheel)], installer=installer, no_deps=True)
    compile_bytecode(venv)
    return {"full_install": why}
