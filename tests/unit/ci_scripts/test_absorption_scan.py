"""ci/absorption_scan.py: statuses from code markers in an sdist, sha256 checks of cached sdists, --check.

Synthetic sdists (tiny tarballs in tmp dirs) stand in for vLLM's; the script runs as a separate process
with --offline against a cached index copy, exactly as it is run by hand.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT

REPO = REPO_ROOT
SCRIPT = REPO / "ci" / "absorption_scan.py"

OLD_SCHEDULER = """\
class Scheduler:
    def _update_waiting_for_remote_kv(self, request):
        num_computed_tokens = len(block_ids) * self.block_size
        num_computed_tokens = min(num_computed_tokens, request.num_tokens)
"""
NEW_SCHEDULER = """\
class Scheduler:
    def schedule(self):
        if load_kv_async:
            # Set num_computed_tokens even though KVs are not yet loaded.
            request.num_computed_tokens = num_computed_tokens

    def finish_requests(self, valid_requests):
        for request in valid_requests:
            if request.status == RequestStatus.WAITING_FOR_REMOTE_KVS:
                # A comment between the two lines.
                delay_free_blocks = (
                    request.request_id not in self.finished_recving_kv_req_ids
                )
            self._free_request(request, delay_free_blocks=delay_free_blocks)

    def has_finished_requests(self):
        # Finished requests waiting on delayed connector cleanup remain in
        return len(self.requests) > num_in_queues
"""


def make_sdist(cache: Path, version: str, files: dict[str, str]) -> tuple[str, str]:
    name = f"vllm-{version}.tar.gz"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"vllm-{version}/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (cache / "sdists").mkdir(parents=True, exist_ok=True)
    (cache / "sdists" / name).write_bytes(buffer.getvalue())
    return name, hashlib.sha256(buffer.getvalue()).hexdigest()


def write_index(cache: Path, entries: dict[str, str]) -> None:
    files = [
        {"filename": name, "url": f"https://example.invalid/{name}", "hashes": {"sha256": sha}}
        for name, sha in entries.items()
    ]
    (cache / "vllm-simple-index.json").write_text(json.dumps({"files": files, "versions": []}))


def run(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--offline", "--cache", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    root = tmp_path / "research"
    old = make_sdist(root, "1.0.0", {"vllm/v1/core/sched/scheduler.py": OLD_SCHEDULER})
    new = make_sdist(root, "2.0.0", {"vllm/v1/core/sched/scheduler.py": NEW_SCHEDULER, "README.md": "x"})
    write_index(root, dict([old, new]))
    return root


def test_statuses_follow_the_markers(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan.json"
    result = run(cache, "--versions", "1.0.0,2.0.0", "--json", str(out), "--evidence")
    assert result.returncode == 0, result.stderr
    scan = json.loads(out.read_text())
    assert scan["1.0.0"]["0006"]["status"] == "partial"
    assert scan["2.0.0"]["0006"]["status"] == "present"
    assert [scan[v]["0009"]["status"] for v in ("1.0.0", "2.0.0")] == ["absent", "present"]
    assert [scan[v]["0011"]["status"] for v in ("1.0.0", "2.0.0")] == ["absent", "present"]
    assert scan["2.0.0"]["0008"]["status"] == "absent"
    # Evidence names the file and line of the match.
    assert scan["2.0.0"]["0011"]["evidence"] == [
        "vllm/v1/core/sched/scheduler.py:17: # Finished requests waiting on delayed connector cleanup remain in"
    ]
    assert "| 0006 | partial | **yes** |" in result.stdout


def test_check_reports_each_difference(cache: Path, tmp_path: Path) -> None:
    expected = tmp_path / "expected.json"
    assert run(cache, "--versions", "2.0.0", "--json", str(expected)).returncode == 0
    data = json.loads(expected.read_text())
    data["2.0.0"]["0011"]["status"] = "absent"
    expected.write_text(json.dumps(data))
    result = run(cache, "--versions", "2.0.0", "--check", str(expected))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"absorption_scan: {expected}: 2.0.0 0011: expected absent, found present"
    ]


def test_a_cached_sdist_that_is_not_the_index_s_is_refused(cache: Path) -> None:
    (cache / "sdists" / "vllm-2.0.0.tar.gz").write_bytes(b"not the file the index names")
    result = run(cache, "--versions", "2.0.0")
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "vllm-2.0.0.tar.gz: sha256 " in line and "is not the index's" in line


def test_a_release_without_an_sdist_is_one_line(cache: Path) -> None:
    result = run(cache, "--versions", "9.9.9")
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == "absorption_scan: vllm 9.9.9: no sdist vllm-9.9.9.tar.gz on https://pypi.org/simple/vllm/"
    )
