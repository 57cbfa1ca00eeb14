"""The stock side of the cpu tier, kept between `vpatch conform` runs by everything its outcome depends on.

Stock vLLM does not change when the series does: the scenario runner's stock trace, the aggregated P/D
reference and the outcomes of vLLM's own tests in the stock venv are the same for every series of a pin.
Each is kept under `CACHE/conform/stock-runs/KEY/` (the file it produced and an entry with its sha256) and
reused while its key is the same; the check's detail then says so, with the key. The key holds:

- what ran and its arguments (runner: kv-events off, its hash algorithm; P/D: the mode; vLLM's tests: the
  base commit they are read from);
- the stock wheel's sha256 and every distribution importable in its venv (the venv's own and its layers',
  by dist-info name, so a changed runtime layer or an added package is a new key);
- the driver and check sources (`ci_reuse.sources_fingerprint`: toolkit/conformance, serving, contracts),
  toolkit/envs.py (the child's environment and the venv layout), the vpatch version;
- Python and the machine, and the environment variables a vLLM child reads (VLLM_*, OMP_*, PYTHON*, ...).

Only a run that finished is kept (a runner that failed raises; nothing is written). `reuse=False`
(`vpatch conform --no-reuse`, `vpatch ci --no-reuse`) runs the stock side again and keeps the new result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.cache import atomic_write_bytes, atomic_write_text, locked, sha256_file
from toolkit.ci_reuse import make_key, short, sources_fingerprint

# Environment variables that reach a vLLM child and can change what it computes.
ENV_PREFIXES = ("VLLM_", "OMP_", "MKL_", "TORCH", "CUDA_", "HF_", "TRANSFORMERS_", "PYTHON", "TOKENIZERS_")
# Long enough for vLLM's own tests (their timeout is 1800 s) run by another process holding the key.
LOCK_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Kept:
    """A stock run that was reused: its key and when it was made."""

    key: str
    made: str

    def note(self) -> str:
        return f"stock side reused (key {short(self.key)}, made {self.made}; --no-reuse runs it again)"


def venv_distributions(venv: Path) -> list[list[str]]:
    """Per site-packages importable in `venv` (its own, then each layer its .pth names): the dist-info names."""
    sites = sorted(venv.glob("lib/python*/site-packages"))
    for pth in sorted(p for site in sites for p in site.glob("*.pth")):
        with contextlib.suppress(OSError):
            sites += [Path(line) for line in pth.read_text(encoding="utf-8").splitlines() if line.startswith("/")]
    return [[str(site), *sorted(p.name for p in site.glob("*.dist-info"))] for site in sites if site.is_dir()]


def child_environment() -> list[list[str]]:
    return sorted([k, _own_root_named(k, v)] for k, v in os.environ.items() if k.startswith(ENV_PREFIXES))


def _own_root_named(name: str, value: str) -> str:
    """PYTHONPATH with this checkout's own root as a token: the sources the child imports from it are keyed by
    their bytes already, so a clone in another folder keys like this one."""
    if name != "PYTHONPATH":
        return value
    root = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join("<vpatch>" if entry.rstrip("/") == root else entry for entry in value.split(os.pathsep))


def _envs_digest() -> str:
    return hashlib.sha256((Path(__file__).resolve().parents[1] / "envs.py").read_bytes()).hexdigest()


def stock_run_key(what: str, venv: Path, wheel_sha256: str, facts: Sequence[object]) -> str:
    return make_key(
        "stock-run",
        [
            what,
            list(facts),
            wheel_sha256,
            venv_distributions(venv),
            sources_fingerprint(),
            _envs_digest(),
            platform.python_version(),
            platform.machine(),
            child_environment(),
        ],
    )


class StockRuns:
    """Kept stock runs under CACHE/conform/stock-runs/, read only when `reuse` is on (always written)."""

    def __init__(self, cache_dir: Path, *, reuse: bool = True) -> None:
        self.root = cache_dir / "conform" / "stock-runs"
        self.reuse = reuse

    def produce(self, key: str, out: Path, run: Callable[[Path], object]) -> Kept | None:
        """`out` holds the run's file: the kept one (returned as Kept) or one `run(out)` wrote just now (None).
        Runs of one key wait for each other, so a second process reuses what the first made."""
        directory = self.root / short(key)
        out.parent.mkdir(parents=True, exist_ok=True)
        with locked(directory, timeout=LOCK_TIMEOUT):
            kept = self._kept(directory, key)
            if kept is not None:
                entry, data = kept
                atomic_write_bytes(out, data)
                return Kept(key, entry["made"])
            run(out)
            directory.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out, directory / "output.tmp")
            os.replace(directory / "output.tmp", directory / "output")
            made = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            entry = {"key": key, "file": out.name, "sha256": sha256_file(directory / "output"), "made": made}
            atomic_write_text(directory / "entry.json", json.dumps(entry, sort_keys=True) + "\n")
        return None

    def _kept(self, directory: Path, key: str) -> tuple[dict, bytes] | None:
        if not self.reuse:
            return None
        try:
            entry = json.loads((directory / "entry.json").read_text(encoding="utf-8"))
            data = (directory / "output").read_bytes()
            if entry["key"] != key or hashlib.sha256(data).hexdigest() != entry["sha256"]:
                return None  # another key's entry (a short-key clash) or a damaged file: run again
            if not isinstance(entry["made"], str):
                return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return entry, data
