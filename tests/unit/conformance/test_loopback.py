"""toolkit/conformance/loopback.py on real sockets and real process groups; engine_serve's failure line."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit.conformance import loopback
from toolkit.conformance.engine_serve import engine_died
from toolkit.conformance.loopback import last_words
from toolkit.errors import VpatchError

# A leader that starts a child ignoring SIGTERM (as an engine core busy in a step may), then waits.
STUBBORN = """
import signal, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"])
time.sleep(60)
"""


def test_ports_are_below_the_ephemeral_range_bindable_and_never_handed_out_twice() -> None:
    low = loopback._ephemeral_low()
    ports = [loopback.free_port() for _ in range(40)]
    assert len(set(ports)) == len(ports)
    assert all(max(1024, low - loopback.BELOW_EPHEMERAL) <= p < low for p in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[0]))  # really free


def test_each_engine_process_gets_its_own_vllm_port_below_the_ephemeral_range() -> None:
    """vLLM scans upward from VLLM_PORT for its torch.distributed port; unset, it takes an ephemeral one that
    another connection may take first (the EADDRINUSE of a decode engine in a main-job run)."""
    from toolkit.conformance.engine_procs import engine_environment

    ports = [int(engine_environment()["VLLM_PORT"]) for _ in range(8)]
    assert len(set(ports)) == len(ports)
    assert all(p < loopback._ephemeral_low() for p in ports)


def test_a_bound_port_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        picks = iter([port, port, port + 1 if port + 1 < 65536 else port - 1])
        monkeypatch.setattr(loopback.random, "randrange", lambda a, b: next(picks))
        assert loopback.free_port() != port


def test_end_group_waits_until_every_member_is_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN], start_new_session=True)
    deadline = time.monotonic() + 30
    while len(loopback.group_members(proc.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    members = loopback.group_members(proc.pid)
    assert proc.pid in members and len(members) == 2
    began = time.monotonic()
    loopback.end_group(proc, grace=1.0)  # the child ignores SIGTERM: it takes the SIGKILL
    assert loopback.group_members(proc.pid) == []
    assert proc.returncode is not None and time.monotonic() - began < 10


def test_end_group_of_a_group_already_gone_signals_nothing() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    proc.wait(timeout=30)
    loopback.end_group(proc, grace=1.0)
    assert loopback.group_members(proc.pid) == []


def test_a_dead_servers_error_is_one_line_naming_its_log_and_how_the_engine_died(tmp_path: Path) -> None:
    log = tmp_path / "serve-prefill.log"
    log.write_text(
        "(APIServer pid=1) INFO started\n"
        "(EngineCore pid=2) ERROR 12-02 [core.py:1] EngineCore encountered a fatal error.\n"
        "(EngineCore pid=2) ERROR Worker proc VllmWorker-0 died unexpectedly (exit code: -9), shutting down.\n"
        'INFO:     127.0.0.1:5 - "POST /v1/completions HTTP/1.1" 500 Internal Server Error\n',
        encoding="utf-8",
    )
    assert "died unexpectedly (exit code: -9)" in last_words(log)
    gone = tmp_path / "serve-decode.log"  # what 0.32.0 logged when its engine core was SIGKILLed here
    gone.write_text(
        "(APIServer pid=3) WARNING [core_client.py:817] [shutdown] MPClient: engine core exited unexpectedly; "
        "starting cleanup\n(APIServer pid=3) ERROR [async_llm.py:906] vllm.v1.engine.exceptions.EngineDeadError: "
        "EngineCore encountered an issue.\nINFO:     Shutting down\n",
        encoding="utf-8",
    )
    assert "engine core exited unexpectedly" in last_words(gone)
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait(timeout=30)
    error = engine_died("prefill", proc, log, "the request of len64")
    assert isinstance(error, VpatchError) and "\n" not in str(error)
    assert str(error).startswith(str(log)) and "the prefill server exited (code 3) during the request of len64" in str(
        error
    )
    assert last_words(tmp_path / "missing.log") == "an empty log"
