"""A rebase written beside NEW's committed series (`vpatch rebase --beside`): adopt it or discard it.

`--beside` writes the result to `patches/<project>-NEW.rebased/` and deletes nothing. `vpatch rebase
--adopt NEW` makes it NEW's series (the files vpatch writes are replaced, a hand-written NOTES.md of the
committed series is kept), then removes the `.rebased` directory; `vpatch rebase --discard NEW` removes it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from toolkit.errors import VpatchError
from toolkit.lifecycle.rebase.complete import result_dir
from toolkit.project import Project
from toolkit.txn import transaction, writer_lock


def rebased_dir(project: Project, version: str) -> tuple[Path, Path]:
    """(NEW's series directory, the rebase written beside it), the latter required to exist."""
    pin = project.pins.get(version)
    series, beside = (result_dir(project.options.patches_dir, pin, beside=b) for b in (False, True))
    if not (beside / "series").is_file():
        raise VpatchError(
            f"no rebase written beside {series.name} (`vpatch rebase ... --beside` writes one)", path=beside
        )
    return series, beside


def adopt(project: Project, version: str) -> Path:
    """Make the rebase written beside NEW's series that series; returns the series directory."""
    series, beside = rebased_dir(project, version)
    files = {
        str(path.relative_to(beside)): path.read_bytes()
        for path in sorted(beside.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }
    with (
        writer_lock(project.options.patches_dir),
        transaction(project.options.patches_dir, f"adopt {beside.name}") as txn,
    ):
        txn.stage_series(series, files, keep_old=False)
        txn.commit()
    shutil.rmtree(beside)
    return series


def discard(project: Project, version: str) -> Path:
    """Remove the rebase written beside NEW's series; returns the directory removed."""
    _, beside = rebased_dir(project, version)
    shutil.rmtree(beside)
    return beside
