"""A local package index served over real HTTP, for downloads the tests can trust or tamper with."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.harness.trees import sha256


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
