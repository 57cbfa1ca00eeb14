"""Drivers: scripts that run inside a vLLM venv (stock or dynamo-base), launched by path, never imported by vpatch.

The venv holds vLLM and its runtime, not vpatch, so a driver imports only vLLM, the standard library and
its sibling drivers. Siblings find each other without any `sys.path` edit: Python puts the directory of
the script it runs first on `sys.path`, so `import fake_engine` in a driver run by path resolves to the
file beside it. (Code run in a venv that is not one of these scripts, such as a test's `python -c`
snippet, gets the directory through PYTHONPATH for that child only: `drivers_pythonpath`.)

| driver | run by path | what |
|---|---|---|
| `runner.py` | yes | the scenario runner: named workloads through the V1 scheduler, one JSON line per step |
| `pd_scenarios.py` | yes | the prefill/decode disaggregation scenarios, aggregated or disaggregated |
| `kvload.py` | yes | KV-event load (step overhead, publisher throughput), one `VPATCH-BENCH {json}` line |
| `pdload.py` | yes | KV-transfer throughput of the P/D connectors, one `VPATCH-BENCH {json}` line |
| `stock_config.py` | yes | configurations through a stock release's own parser, scheduler and connector factory |
| `import_probe.py` | yes | how far a build's modules import (platform, compiled extension): `VPATCH-IMPORTS {json}` |
| `upstream_conftest.py` | copied | the conftest.py of vLLM's tests/v1/core run offline on the CPU |
| `fake_engine.py` | imported | vLLM's scheduler, KV-cache manager and block pool with a fake model; the CPU platform |
| `release_api.py` | imported | how each vLLM release spells a thing: hashing, cached requests, ModelRunnerOutput |
| `engine_truth.py` | imported | the runner's stat-logger input and the kv-routing contract's ground truth |
| `pd_worker.py` | imported | the P/D fake worker (a real KV cache) and the connectors' worker halves |

This module is the launcher side, used by the core: standard library only, nothing from the drivers.
"""

from __future__ import annotations

import os
from pathlib import Path

DRIVERS = Path(__file__).resolve().parent


def driver_path(name: str) -> Path:
    """The file of the driver `name` (without `.py`); a name that is not a driver here is a bug in the caller."""
    path = DRIVERS / f"{name}.py"
    if name.startswith("_") or "/" in name or not path.is_file():
        raise ValueError(f"no driver named {name!r} in {DRIVERS}")
    return path


def driver_command(python: Path | str, name: str, *args: str) -> list[str]:
    """The command line that runs driver `name` by path with the venv's interpreter `python`."""
    return [str(python), str(driver_path(name)), *args]


def drivers_pythonpath(env: dict[str, str]) -> dict[str, str]:
    """`env` with the drivers' directory first on PYTHONPATH: for a child that imports a driver without
    running one by path. Only that child's environment changes, never this process's `sys.path`."""
    child = dict(env)
    child["PYTHONPATH"] = os.pathsep.join(p for p in (str(DRIVERS), env.get("PYTHONPATH", "")) if p)
    return child
