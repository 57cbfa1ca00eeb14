"""The larger model of bench/engine_steps.py and bench/engine_step_costs.py (`--model larger`), generated and cached.

Made by bench/_make_larger_model.py inside the engine venv (the tiny model's maker with other sizes), cached as
`<cache>/models/bench-llama-<sizes>-<fingerprint>/` the way toolkit/conformance/tiny_model.py caches the tiny one
(a lock, a staging directory, every file's sha256 stamped, rebuilt when a file no longer matches its stamp).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from toolkit.cache import atomic_write_text, locked, staging_dir
from toolkit.conformance.tiny_model import MAKER, STAMP, file_hashes
from toolkit.envs import offline_env
from toolkit.errors import VpatchError

GENERATOR = Path(__file__).resolve().parent / "_make_larger_model.py"
# ~25.7 M parameters (103 MB of float32) against the tiny model's 0.8 M; 16 KiB of KV cache per token
SIZES = {"hidden": 512, "intermediate": 1408, "layers": 8, "heads": 8, "kv_heads": 4}
SEED = 0
KV_CACHE_BYTES = 128 << 20  # 256 blocks of 32 tokens at these sizes; the batch holds ~60


def label(sizes: dict[str, int]) -> str:
    return "h{hidden}-i{intermediate}-l{layers}-a{heads}-k{kv_heads}".format(**sizes)


def parse_sizes(text: str) -> dict[str, int]:
    """`hidden=512,layers=8` over SIZES' defaults."""
    sizes = dict(SIZES)
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        if key not in sizes or not value.isdigit():
            raise SystemExit(f"--larger-sizes: {item!r} (keys: {', '.join(SIZES)})")
        sizes[key] = int(value)
    return sizes


def fingerprint(env: Any, sizes: dict[str, int]) -> str:
    blob = json.dumps([MAKER.read_bytes().hex(), GENERATOR.read_bytes().hex(), sizes, SEED, sorted(env.requirements)])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def larger_model_dir(cache_dir: Path, env: Any, sizes: dict[str, int]) -> tuple[Path, int]:
    """The cached model directory and its parameter count, generated on first use."""
    final = cache_dir / "models" / f"bench-llama-{label(sizes)}-{fingerprint(env, sizes)}"
    with locked(final):
        stamp = final / STAMP
        if stamp.is_file():
            record = json.loads(stamp.read_text(encoding="utf-8"))
            if record.get("files") and file_hashes(final) == record["files"]:
                return final, int(record["params"])
        with staging_dir(final) as staged:
            flags = [f"--{k.replace('_', '-')}={v}" for k, v in sizes.items()]
            environment = offline_env() | {"OMP_NUM_THREADS": "1"}
            proc = subprocess.run(
                [str(env.python), str(GENERATOR), "--out", str(staged), "--seed", str(SEED), *flags],
                capture_output=True,
                text=True,
                env=environment,
                timeout=1200,
            )
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                raise VpatchError(f"generating the larger model failed: {last}", path=GENERATOR)
            params = int(json.loads(proc.stdout.strip().splitlines()[-1])["params"])
            record = {"sizes": sizes, "seed": SEED, "params": params, "files": file_hashes(staged)}
            atomic_write_text(staged / STAMP, json.dumps(record, indent=1, sort_keys=True) + "\n")
            if final.exists():
                shutil.rmtree(final)
            staged.rename(final)
    return final, params
