"""What `vpatch build --no-verify` loads: only what the overlay build needs (start-up is most of a warm build)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.unit.wheel.test_wheel_overlay import build, series  # noqa: F401 (the fixture)

PROBE = """
import json, sys
from toolkit.cli import main
code = main(sys.argv[1:])
print("VPATCH-PROBE " + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""

# Each is loaded by another command or path, never by a warm overlay build: rich (terminal output; the build's
# stdout here is a pipe), packaging.tags (wheel names are parsed by toolkit.dist_files), GitPython and the git
# verbs (the patched files come from the cache), zipfile and calendar (the stock wheel is read by zipread),
# the verifier and the source build.
NOT_LOADED = (
    "rich",
    "packaging.tags",
    "git",
    "toolkit.git.worktree",
    "toolkit.git.index",
    "toolkit.git.mail",
    "toolkit.git.history",
    "toolkit.git.repo",
    "difflib",
    "zipfile",
    "calendar",
    "toolkit.wheel.verify",
    "toolkit.wheel.source",
)


def test_a_warm_build_loads_only_what_it_needs(series, capsys, tmp_path):  # noqa: F811
    ws = series
    out = tmp_path / "out"
    assert build(ws, capsys, out, "--no-verify")[0] == 0  # fills the patched-files cache
    argv = ["--root", str(ws.root), "--cache-dir", str(ws.cache), "build", "1.0", "--no-verify", "-o", str(out)]
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-PROBE "))
    result = json.loads(line.removeprefix("VPATCH-PROBE "))
    assert result["code"] == 0, proc.stderr
    assert len(list(out.glob("vllm-1.0+*.whl"))) == 1
    modules = set(result["modules"])
    assert "toolkit.wheel.overlay" in modules  # the probe did build
    loaded = [name for name in NOT_LOADED if name in modules or any(m.startswith(name + ".") for m in modules)]
    assert loaded == []
