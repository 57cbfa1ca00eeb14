"""A vpatch project in a tmp dir, the CLI run in-process or as CI runs it, and the round-trip check."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.harness.index import LocalIndex
from tests.harness.trees import default_tree, make_sdist, make_wheel
from toolkit.cli import main as vpatch_main


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

    def pin_carrying(self, version: str, tree: dict[str, str | bytes] | None = None, *, series_of: str = "1.0") -> None:
        """Publish `version` (`tree`: its sdist's files, default the stock ones), pin it and give it `series_of`'s
        series unchanged, as a clean rebase would leave it."""
        self.publish(version, tree)
        assert self.run("pin", "add", version) == 0
        shutil.copytree(self.series_dir(series_of), self.series_dir(version))

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
    root: Path, *args: str, expect: int | None = 0, timeout: float = 1800, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """The `vpatch` console script as CI runs it, in a process of its own; asserts its exit code (0 or 1 when
    `expect` is None: a run whose checks the caller judges one by one)."""
    vpatch = Path(sys.executable).with_name("vpatch")
    proc = subprocess.run(
        [str(vpatch), "--root", str(root), *args], capture_output=True, text=True, timeout=timeout, cwd=cwd
    )
    assert proc.returncode in ((0, 1) if expect is None else (expect,)), proc.stdout[-3000:] + proc.stderr[-3000:]
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
