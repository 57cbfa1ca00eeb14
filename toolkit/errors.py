"""One error type for everything a user can get wrong; the CLI prints it as a single line."""

from __future__ import annotations

from pathlib import Path


class VpatchError(Exception):
    """A problem with the user's input or environment, reported as `location: message`."""

    def __init__(self, message: str, *, path: Path | str | None = None, line: int | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        super().__init__(self.render())

    def render(self) -> str:
        if self.path is None:
            return self.message
        where = display_path(self.path)
        if self.line is not None:
            where = f"{where}:{self.line}"
        return f"{where}: {self.message}"


def display_path(path: Path) -> str:
    """Paths relative to the working directory when that is shorter, as compilers print them."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
