"""The project a command works on: options, pins and series directories."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit import tempnames
from toolkit.errors import VpatchError
from toolkit.model import Pin, Series, load_series
from toolkit.options import Options
from toolkit.pins import PinsFile, load_pins
from toolkit.sources import Base, materialize

if TYPE_CHECKING:
    from toolkit.checkout import Checkout


@dataclass(frozen=True)
class Project:
    options: Options
    pins: PinsFile

    @classmethod
    def load(cls, options: Options) -> Project:
        return cls(options, load_pins(options.pins_file))

    def series_dir(self, pin: Pin) -> Path:
        return self.options.patches_dir / pin.series_dirname

    def other_series_dirs(self, pin: Pin) -> list[Path]:
        """Every other pin's series directory: where a new patch's number must not have been used yet."""
        return [self.series_dir(p) for p in self.pins.pins if p is not pin]

    def has_series(self, pin: Pin) -> bool:
        return (self.series_dir(pin) / "series").exists()

    def series(self, pin: Pin) -> Series:
        return load_series(self.series_dir(pin), pin.version)

    def base(self, pin: Pin, *, source: str | None = None) -> Base:
        return materialize(pin, self.options.cache_dir, source=source, quiet=self.options.json)

    def other_bases(self, pin: Pin) -> list[Base]:
        """Bases of the other pins that materialize without error (for three-way merges)."""
        bases = []
        for other in self.pins.pins:
            if other.version != pin.version:
                try:
                    bases.append(self.base(other))
                except VpatchError:
                    continue
        return bases

    def default_checkout_dir(self, pin: Pin) -> Path:
        return self.options.checkouts_dir / pin.series_dirname

    @contextmanager
    def scratch_checkout(
        self, pin: Pin, *, source: str | None = None, sparse_paths: tuple[str, ...] | None = None
    ) -> Iterator[Checkout]:
        """A throw-away checkout of the pin's base (for check, export comparisons and builds)."""
        base = self.base(pin, source=source)
        scratch_root = self.options.cache_dir / "tmp"
        scratch_root.mkdir(parents=True, exist_ok=True)
        tempnames.sweep(scratch_root)  # scratch checkouts of killed runs
        with tempfile.TemporaryDirectory(prefix=tempnames.prefix(pin.series_dirname), dir=scratch_root) as tmp:
            from toolkit.checkout import create_checkout

            yield create_checkout(base, Path(tmp) / "tree", sparse_paths=sparse_paths)
