"""`vpatch conform 0.8.4 --tier gpu` on the real wheels: every cpu check runs for real, gpu says why it cannot."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.real


def test_conform_084_all_tiers(tmp_path, patched_env_084, stock_env_084):
    vpatch = Path(sys.executable).with_name("vpatch")
    proc = subprocess.run(
        [str(vpatch), "--root", str(REPO), "conform", "0.8.4", "--tier", "gpu", "-o", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)["results"][0]
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    for name in (
        "series-applies",
        "api-surface",
        "parity",
        "non-interference",
        "kv-index-invariant",
        "no-block-leaks",
        "upstream-tests",
    ):
        assert statuses[name] == "pass", (name, result["checks"])
    assert statuses["gpu-greedy-parity"] == "not-applicable"
    upstream = next(c for c in result["checks"] if c["name"] == "upstream-tests")
    # vLLM's own tests: the prefix caching, specialized manager, kv cache utils and scheduler files ran
    assert "62 tests" in upstream["detail"] and "same outcome in both builds" in upstream["detail"]
    written = json.loads((tmp_path / "vllm-0.8.4-gpu.json").read_text())
    assert written["schema"] == 1 and written["stock"]["sha256"] and written["patched"]["fingerprint"]
    assert written["ok"] is True


def test_conform_090_against_dynamo_base_084(tmp_path):
    """Upstream 0.9.0's own KV events against our 0.8.4 series: the retirement evidence for kv-routing."""
    vpatch = Path(sys.executable).with_name("vpatch")
    proc = subprocess.run(
        [str(vpatch), "--root", str(REPO), "conform", "0.9.0", "--against", "0.8.4", "-o", str(tmp_path), "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout)["results"][0]
    statuses = {c["name"]: c["status"] for c in result["checks"]}
    assert statuses["index-invariant (dynamo-base 0.8.4)"] == "pass"
    assert statuses["index-invariant (stock 0.9.0)"] == "pass"
    assert statuses["router-agreement"] == "pass"
    assert (tmp_path / "vllm-0.9.0-against-0.8.4.json").exists()
