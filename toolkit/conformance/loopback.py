"""Loopback ports and process groups for the engine processes the tiers start.

Ports: a port found by `bind(("127.0.0.1", 0))` and closed again is a free port of the kernel's ephemeral range,
and any process's next outgoing connection (ZMQ, UCX, HTTP clients: a loaded machine has hundreds) may take it
as its source port before the server we hand it to binds it. `free_port()` therefore picks below that range
(`/proc/sys/net/ipv4/ip_local_port_range`), where the kernel never assigns ports by itself, checks that nothing
is bound there, and never hands out the same port twice in one process (engines start from several threads).

`last_words(log)`: how an engine that died says so in its log (vLLM's own line), for the one-line error.

Process groups: a server (and an engine process, engine_procs.py) started with `start_new_session=True` is the
leader of its group, and its engine core (and any worker) are members. `end_group()` signals the group, waits
until no member is left (reading /proc), and only signals while members are there: a process group id stays
reserved by its live members, so the signal cannot reach a later, unrelated group that was given the same number
after the old one was gone.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from toolkit.errors import VpatchError

_handed: set[int] = set()
_lock = threading.Lock()
BELOW_EPHEMERAL = 12_000  # how many ports under the ephemeral range to pick from


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing is bound to, outside the ephemeral range, new to this process."""
    high = _ephemeral_low()
    low = max(1024, high - BELOW_EPHEMERAL)
    with _lock:
        for _ in range(500):
            port = random.randrange(low, high)
            if port in _handed:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed.add(port)
            return port
    raise VpatchError(f"no free loopback TCP port in {low}-{high - 1}")


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is `pgid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state, ppid, pgrp, ...
        if fields[0] != "Z" and int(fields[2]) == pgid:
            found.append(int(entry.name))
    return found


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """`sig` to every member of process group `pgid`, only while it has members (see the module doc)."""
    if group_members(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)


def _wait_gone(proc: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader as soon as it exits
        if proc.returncode is not None and not group_members(proc.pid):
            return True
        time.sleep(0.1)
    return False


def kill_group(proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGKILL to the process group `proc` leads; returns once every member is gone (or raises after `timeout` s)."""
    signal_group(proc.pid, signal.SIGKILL)
    if not _wait_gone(proc, timeout):
        raise VpatchError(f"process group {proc.pid} did not exit after SIGKILL: {group_members(proc.pid)}")


def end_group(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """End the process group `proc` leads: SIGTERM, then SIGKILL after `grace` s; returns once every member is
    gone (or raises after another `grace` s)."""
    signal_group(proc.pid, signal.SIGTERM)
    if _wait_gone(proc, grace):
        return
    signal_group(proc.pid, signal.SIGKILL)
    if not _wait_gone(proc, grace):
        raise VpatchError(f"process group {proc.pid} did not exit after SIGKILL: {group_members(proc.pid)}")


# What vLLM logs when an engine is gone, most telling first: 0.32.0's client when the engine core process vanished
# (seen with a SIGKILLed engine core), the executor when a worker process died, then the error the requests get.
DEATH_SIGNS = ("exited unexpectedly", "died unexpectedly", "EngineDeadError")
ERROR_SIGNS = ("Traceback", "Killed", "Error")


def last_words(log: Path) -> str:
    """The log's line telling how the engine died (else its last error line, else its last line), shortened."""
    lines = [ln.strip() for ln in log.read_text("utf-8", "replace").splitlines() if ln.strip()] if log.exists() else []
    told = next((ln for sign in DEATH_SIGNS for ln in lines if sign in ln), None)
    told = told or next((ln for ln in reversed(lines) if any(s in ln for s in ERROR_SIGNS)), None)
    return (told or (lines[-1] if lines else "an empty log"))[:300]
