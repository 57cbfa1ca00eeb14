"""The engine tier's model: a deterministic tiny Llama that vpatch generates itself, cached.

Generated inside the engine venv by toolkit/serving/engine/make_model.py (run by path)
into `<cache>/models/<name>-<fingerprint>/`. The fingerprint covers what decides the
bytes: the maker script, the seed, and the engine venv's package set (torch and
tokenizers versions). The entry is built in a staging directory under a lock, stamped
with every file's sha256, and renamed into place; an entry whose files no longer
match their stamp is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

from toolkit.cache import atomic_write_text, locked, sha256_file, staging_dir
from toolkit.conformance.engine_env import EngineEnv
from toolkit.envs import offline_env
from toolkit.errors import VpatchError

MAKER = Path(__file__).resolve().parents[1] / "serving" / "engine" / "make_model.py"
STAMP = "vpatch-model.json"
NAME = "tiny-llama"


def fingerprint(env: EngineEnv, seed: int) -> str:
    blob = json.dumps([MAKER.read_bytes().hex(), seed, sorted(env.requirements)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def generate_model(env: EngineEnv, out: Path, *, seed: int, timeout: float = 600) -> dict[str, str]:
    """Write the model for `seed` into the empty directory `out`; returns {file: sha256}."""
    environment = offline_env()
    environment["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run(
        [str(env.python), str(MAKER), "--out", str(out), "--seed", str(seed)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpatchError(f"generating the tiny model (seed {seed}) failed: {last}", path=MAKER)
    return file_hashes(out)


def file_hashes(directory: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != STAMP}


def model_dir(cache_dir: Path, env: EngineEnv, *, seed: int = 0) -> Path:
    """The cached model directory for `seed`, generated on first use."""
    final = cache_dir / "models" / f"{NAME}-seed{seed}-{fingerprint(env, seed)}"
    with locked(final):
        stamp = final / STAMP
        if stamp.is_file():
            recorded = json.loads(stamp.read_text(encoding="utf-8")).get("files", {})
            if recorded and file_hashes(final) == recorded:
                return final
        with staging_dir(final) as staged:
            files = generate_model(env, staged, seed=seed)
            record = {"name": NAME, "seed": seed, "fingerprint": fingerprint(env, seed), "files": files}
            atomic_write_text(staged / STAMP, json.dumps(record, indent=1, sort_keys=True) + "\n")
            if final.exists():  # damaged (its stamp did not match): rebuilt, never used
                shutil.rmtree(final)
            staged.rename(final)
    return final
