"""`vpatch` in a real process of its own, forked from a process that imported vpatch once (fork_server.py).

`forked_vpatch` answers as `subprocess.run([python, "-m", "toolkit.cli", ...], capture_output=True)` would,
without the interpreter start and imports per run. One server per test process, started on first use and
ended when that process exits.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
from pathlib import Path

from tests.harness.paths import REPO_ROOT

SERVER = Path(__file__).with_name("fork_server.py")
_server: subprocess.Popen[str] | None = None


def _started() -> subprocess.Popen[str]:
    global _server
    if _server is None or _server.poll() is not None:
        _server = subprocess.Popen(
            [sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
        )
        atexit.register(_stop, _server)
    return _server


def _stop(server: subprocess.Popen[str]) -> None:
    if server.poll() is None:
        assert server.stdin is not None
        server.stdin.close()  # the server's loop ends at end of input
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def forked_vpatch(
    argv: list[str], *, env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    server = _started()
    assert server.stdin is not None and server.stdout is not None
    request = {"argv": argv, "env": env, "cwd": str(cwd), "timeout": timeout}
    server.stdin.write(json.dumps(request) + "\n")
    server.stdin.flush()
    line = server.stdout.readline()
    if not line:
        raise RuntimeError(f"the fork server ({SERVER.name}) ended: exit {server.wait()}")
    reply = json.loads(line)
    command = [sys.executable, "-m", "toolkit.cli", *argv]
    return subprocess.CompletedProcess(command, reply["returncode"], reply["stdout"], reply["stderr"])
