"""A wheel vpatch did not build (a fork's own recipe: unpack the stock wheel, patch, repack), read against
the stock wheel of the pin it claims: which files changed, were added or removed, and whether the
compiled files are the stock ones.

The pin is the one whose release the wheel's version is (`0.8.4.post1` and `0.8.4+fork` are 0.8.4's).
When that pin has a series, the files the wheel changes are compared with the files the series touches.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from toolkit.errors import VpatchError
from toolkit.index import fetch_artifact
from toolkit.model import Pin

COMPILED = (".so", ".pyd")
REGENERATED = ("_version.py",)  # a repack usually rewrites the version file


@dataclass
class StockComparison:
    stock: str  # the stock wheel's file name
    modified: list[str]
    added: list[str]
    removed: list[str]
    compiled_unchanged: list[str]
    compiled_changed: list[str]

    @property
    def changed(self) -> set[str]:
        return {*self.modified, *self.added, *self.removed}

    def detail(self) -> str:
        def listed(names: list[str]) -> str:
            return f" ({', '.join(names[:8])}{', …' if len(names) > 8 else ''})" if names else ""

        compiled = f"{len(self.compiled_unchanged)} compiled file(s) unchanged"
        if self.compiled_changed:
            compiled += f", {len(self.compiled_changed)} differ{listed(self.compiled_changed)}"
        return (
            f"against the stock {self.stock}: {len(self.modified)} modified{listed(self.modified)}, "
            f"{len(self.added)} added{listed(self.added)}, {len(self.removed)} removed{listed(self.removed)}; "
            f"{compiled}"
        )


def pin_of(project, version: Version) -> Pin | None:
    release = Version(version.base_version)
    return next((p for p in project.pins.pins if p.version == release), None)


def _dist_info(names) -> str:
    return next((n.split("/")[0] for n in names if n.split("/")[0].endswith(".dist-info")), "")


def compare_with_stock(archive: zipfile.ZipFile, stock_path: Path) -> StockComparison:
    """Members compared by CRC and size (dist-info left out: it is always the wheel's own)."""
    with zipfile.ZipFile(stock_path) as stock:
        theirs = {i.filename: i for i in stock.infolist() if not i.filename.endswith("/")}
    ours = {i.filename: i for i in archive.infolist() if not i.filename.endswith("/")}
    skip_theirs, skip_ours = _dist_info(theirs) + "/", _dist_info(ours) + "/"
    theirs = {n: i for n, i in theirs.items() if not n.startswith(skip_theirs)}
    ours = {n: i for n, i in ours.items() if not n.startswith(skip_ours)}
    common = sorted(theirs.keys() & ours.keys())
    differ = [n for n in common if (theirs[n].CRC, theirs[n].file_size) != (ours[n].CRC, ours[n].file_size)]
    compiled = [n for n in sorted(theirs.keys() | ours.keys()) if n.endswith(COMPILED)]
    return StockComparison(
        stock=stock_path.name,
        modified=[n for n in differ if not n.endswith(COMPILED)],
        added=sorted(n for n in ours.keys() - theirs.keys() if not n.endswith(COMPILED)),
        removed=sorted(n for n in theirs.keys() - ours.keys() if not n.endswith(COMPILED)),
        compiled_unchanged=[n for n in compiled if n in common and n not in differ],
        compiled_changed=[n for n in compiled if n not in common or n in differ],
    )


def check_foreign(report, archive: zipfile.ZipFile, version: Version, project) -> StockComparison | None:
    """Add the `stock-diff` (and, with a series, `changed-set`) checks of a wheel without provenance."""
    pin = pin_of(project, version)
    if pin is None or not pin.wheels:
        release = version.base_version
        report.add("stock-diff", False, f"no stock wheel of vllm {release} is pinned here to compare with")
        return None
    try:
        stock_path = fetch_artifact(project.options.cache_dir, pin.wheels[0], quiet=True)
    except VpatchError as error:
        report.add("stock-diff", False, error.message)
        return None
    found = compare_with_stock(archive, stock_path)
    report.add("stock-diff", not found.compiled_changed, found.detail())
    if project.has_series(pin):
        package = pin.project.replace("-", "_")
        touched = {
            p for patch in project.series(pin).patches for p in patch.touched_paths if p.split("/")[0] == package
        }
        changed = {n for n in found.changed if not n.endswith(REGENERATED)}
        ok = changed == touched
        detail = (
            f"the {len(changed)} changed file(s) are the ones the {pin.label} series touches"
            if ok
            else f"changed but not in the {pin.label} series: {sorted(changed - touched)}; "
            f"in the series but unchanged: {sorted(touched - changed)}"
        )
        report.add("changed-set", ok, detail)
    return found


def changed_python(archive: zipfile.ZipFile, found: StockComparison) -> dict[str, str]:
    return {
        name: archive.read(name).decode("utf-8", "replace")
        for name in sorted({*found.modified, *found.added})
        if name.endswith(".py")
    }
