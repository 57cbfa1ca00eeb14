"""toolkit/conformance/engine_procs.py's EngineProcess with a real driver process: its log at shutdown."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_procs import EngineProcess

LINES = 2000

# A driver speaking pd_drive.py's protocol. On quit it leaves a child behind that holds its stdout and writes
# log lines only once the test says so (the GO file exists): after `close()` has returned. The child leaves the
# engine's process group when the config says so (`close()` ends the group: only such a child outlives it).
DRIVER = """
import json, subprocess, sys
print("VPATCH-PD " + json.dumps({"ready": True}), flush=True)
print("driver: up", flush=True)
for line in sys.stdin:
    if json.loads(line)["op"] == "quit":
        break
CHILD = '''
import os, sys, time
go = sys.argv[1]
for _ in range(6000):
    if os.path.exists(go):
        break
    time.sleep(0.01)
for i in range(%d):
    print(f"child line {i}")
'''
config = json.loads(sys.argv[1])
subprocess.Popen([sys.executable, "-c", CHILD, config["go"]], start_new_session=config["own_group"])  # inherits stdout
print("driver: bye", flush=True)
"""


def python_env() -> EngineEnv:
    """This interpreter's venv, standing in for the engine venv (the driver imports nothing from it)."""
    return EngineEnv(path=Path(sys.prefix), wheel="", requirements=(), build_seconds=0.0, size_bytes=0)


def test_lines_after_close_reach_the_log_and_nothing_writes_to_a_closed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    driver, go, log = tmp_path / "driver.py", tmp_path / "go", tmp_path / "engine.log"
    driver.write_text(DRIVER % LINES, encoding="utf-8")
    engine = EngineProcess(python_env(), {"role": "test", "go": str(go), "own_group": True}, log, driver=driver)
    assert engine.wait_ready(60) == {"ready": True}
    engine.close(reader_bound=0.2)  # the driver is gone, its child still holds stdout
    assert engine.proc.poll() is not None
    assert not engine.log_closed(0.0), "the reader ended although the child still holds stdout"
    go.touch()
    assert engine.log_closed(60), "the reader did not see the end of stdout"
    assert failures == []
    lines = log.read_text(encoding="utf-8").splitlines()
    assert lines[:2] == ["driver: up", "driver: bye"]
    assert lines[2:] == [f"child line {i}" for i in range(LINES)]


def test_close_ends_a_child_left_in_the_engines_group_and_closes_the_log(tmp_path: Path) -> None:
    driver, go, log = tmp_path / "driver.py", tmp_path / "go", tmp_path / "engine.log"
    driver.write_text(DRIVER % LINES, encoding="utf-8")
    engine = EngineProcess(python_env(), {"role": "test", "go": str(go), "own_group": False}, log, driver=driver)
    assert engine.wait_ready(60) == {"ready": True}
    engine.close(reader_bound=30)  # ends the group, the child included: stdout ends, the reader closes the log
    assert engine.log_closed(0.0), "a child in the engine's group outlived close()"
    go.touch()
    assert log.read_text(encoding="utf-8").splitlines() == ["driver: up", "driver: bye"]


def test_an_engine_that_dies_is_told_with_the_last_line_of_its_log(tmp_path: Path) -> None:
    driver, log = tmp_path / "driver.py", tmp_path / "engine.log"
    driver.write_text("import sys\nprint('RuntimeError: no model here', flush=True)\nsys.exit(3)\n", encoding="utf-8")
    engine = EngineProcess(python_env(), {"role": "test"}, log, driver=driver)
    try:
        with pytest.raises(Exception, match=r"the test engine exited \(code 3\): RuntimeError: no model here"):
            engine.wait_ready(60)
    finally:
        engine.close()
    assert engine.log_closed(0.0)
