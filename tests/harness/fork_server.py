"""Run by path: a process that imports vpatch once, then forks one real process per `vpatch` run it is sent.

The crash-safety tests kill a vpatch command at each of its write boundaries (VPATCH_FAULT), dozens of
times per command. Started as `python -m toolkit.cli`, each of those runs paid for an interpreter and
vpatch's imports (the command's own, lazy ones included) before it reached its first write: two thirds of
the trials' time. A child forked from here starts with every vpatch module already imported, and is
otherwise what `python -m toolkit.cli` is: its own process (own pid, so its temp names are its own), the
environment and working directory of the request, stdin from /dev/null, stdout and stderr to files, and
`toolkit.cli.main`'s exit code as its exit status; VPATCH_FAULT ends it with `os._exit` at the point, as in
a fresh interpreter. This process never runs a command itself: no vpatch state is set before the fork.

Protocol (one JSON object per line): in `{"argv": [...], "env": {...}, "cwd": "...", "timeout": s}`, out
`{"returncode": n, "stdout": "...", "stderr": "..."}` (returncode as subprocess gives it: -N for signal N).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import signal
import sys
import tempfile
import time


def _preload() -> None:
    """Every module of vpatch a command may import (not `toolkit.serving`: it runs inside vLLM's venvs)."""
    import toolkit

    for module in pkgutil.walk_packages(toolkit.__path__, "toolkit."):
        if not module.name.startswith("toolkit.serving"):
            importlib.import_module(module.name)


def _child(argv: list[str], env: dict[str, str], cwd: str, out: int, err: int) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(err, 2)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.argv = ["toolkit.cli", *argv]
    code = 1
    try:
        from toolkit.cli import main

        code = main(argv)
    except SystemExit as stop:  # argparse's --help / errors, as `sys.exit(main())` would end
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _wait(pid: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        time.sleep(0.005)


def serve() -> None:
    _preload()
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            sys.stdout.flush()
            pid = os.fork()
            if pid == 0:
                _child(request["argv"], request["env"], request["cwd"], out.fileno(), err.fileno())
            code = _wait(pid, float(request["timeout"]))
            texts = []
            for stream in (out, err):
                stream.seek(0)
                texts.append(stream.read().decode(errors="replace"))
        reply = {"returncode": code, "stdout": texts[0], "stderr": texts[1]}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    serve()
