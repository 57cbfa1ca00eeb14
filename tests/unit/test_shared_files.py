"""Files several commands read, change and replace (pins.toml, CHANGELOG.md): concurrent writers lose nothing.

The concurrency tests start real `vpatch` processes together against one project and one local index;
before the project lock, 4 concurrent `pin add`s lost a pin in 18 of 30 trials (22 of 120 pins).
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.harness import DIFF_AUTHORSHIP, Workspace, env_var
from toolkit.cache import project_lock, update_file
from toolkit.options import load_options

VERSIONS = ["1.0", "1.1", "1.2", "1.3", "1.4"]
TRIALS = 5


def vpatch_command(ws: Workspace, root: Path, *args: str) -> list[str]:
    vpatch = Path(sys.executable).with_name("vpatch")
    return [str(vpatch), "--root", str(root), "--cache-dir", str(ws.cache), "--index-url", ws.index.url, *args]


@pytest.fixture
def warm(workspace: Workspace) -> Workspace:
    """Every version published, and pinned once in this workspace so the shared cache holds its downloads."""
    for version in VERSIONS:
        workspace.publish(version)
        assert workspace.run("pin", "add", version, "--json") == 0
    return workspace


def fresh_project(ws: Workspace, name: str) -> Path:
    """A project whose pins.toml holds 1.0 only."""
    root = ws.root.parent / name
    (root / "patches").mkdir(parents=True)
    subprocess.run(vpatch_command(ws, root, "pin", "add", "1.0", "--json"), check=True, capture_output=True)
    return root


def start_together(commands: list[list[str]]) -> list[subprocess.CompletedProcess[str]]:
    procs = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in commands]
    results = []
    for command, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=600)
        results.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return results


def pinned_versions(root: Path) -> list[str]:
    return sorted(tomllib.loads((root / "patches" / "pins.toml").read_text())["pins"])


def test_concurrent_pin_add_keeps_every_pin(warm: Workspace):
    for trial in range(TRIALS):
        root = fresh_project(warm, f"trial-{trial}")
        results = start_together([vpatch_command(warm, root, "pin", "add", v, "--json") for v in VERSIONS[1:]])
        assert [r.returncode for r in results] == [0] * len(VERSIONS[1:]), [r.stderr for r in results]
        assert pinned_versions(root) == VERSIONS, f"trial {trial}"
        # the lock is on the directory: no lock file or temporary file is left in the project tree
        assert sorted(p.name for p in (root / "patches").iterdir()) == ["pins.toml"]


def test_concurrent_pin_add_of_one_version_pins_it_once(warm: Workspace):
    root = fresh_project(warm, "same")
    results = start_together([vpatch_command(warm, root, "pin", "add", "1.1", "--json") for _ in range(3)])
    assert sorted(r.returncode for r in results) == [0, 1, 1]
    pins = root / "patches" / "pins.toml"
    for result in results:
        if result.returncode:
            assert result.stderr.strip().splitlines() == [
                "vpatch: error: same/patches/pins.toml: vllm 1.1 is already pinned (use --replace to re-pin)"
            ]
    assert pinned_versions(root) == ["1.0", "1.1"]
    assert pins.read_text().count('[pins."1.1"]') == 1


def test_pin_add_replace_is_byte_stable(warm: Workspace):
    pins = warm.patches / "pins.toml"
    before = pins.read_bytes()
    assert warm.run("pin", "add", "1.2", "--replace", "--json") == 0
    first = pins.read_bytes()
    assert warm.run("pin", "add", "1.2", "--replace", "--json") == 0
    assert pins.read_bytes() == first == before  # the same pin again: not a byte more (was a blank line a run)
    assert b"\n\n\n" not in first


def test_pin_add_out_of_order_then_replace_is_byte_stable(tmp_path: Path, warm: Workspace):
    root = tmp_path / "reordered"
    (root / "patches").mkdir(parents=True)
    for version in ("1.3", "1.1", "1.2"):
        subprocess.run(vpatch_command(warm, root, "pin", "add", version, "--json"), check=True, capture_output=True)
    pins = root / "patches" / "pins.toml"
    assert pinned_versions(root) == ["1.1", "1.2", "1.3"]
    text = pins.read_text()
    assert text.index('[pins."1.1"]') < text.index('[pins."1.2"]') < text.index('[pins."1.3"]')
    assert "\n\n\n" not in text
    for _ in range(2):
        replaced = vpatch_command(warm, root, "pin", "add", "1.1", "--replace", "--json")
        subprocess.run(replaced, check=True, capture_output=True)
        assert pins.read_text() == text


def append_lines(path: str, worker: int, count: int) -> None:
    for number in range(count):
        line = f"{worker}:{number}\n".encode()

        def append(old: bytes | None, line: bytes = line) -> bytes:
            return (old or b"") + line

        update_file(Path(path), append)


def test_update_file_from_concurrent_processes_loses_no_update(tmp_path: Path):
    """The helper every shared project file goes through (pins.toml, CHANGELOG.md), hammered directly."""
    target = tmp_path / "CHANGELOG.md"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=append_lines, args=(str(target), w, 40)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=300)
        assert worker.exitcode == 0
    lines = target.read_text().splitlines()
    assert sorted(lines) == sorted(f"{w}:{n}" for w in range(4) for n in range(40))
    assert os.listdir(tmp_path) == ["CHANGELOG.md"]


def test_project_lock_is_reentrant_and_unchanged_content_is_not_rewritten(tmp_path: Path):
    target = tmp_path / "pins.toml"
    target.write_text("x\n")
    inode = target.stat().st_ino
    with project_lock(target):
        assert update_file(target, lambda old: old) == b"x\n"  # nested: the same process holds the lock
    assert target.stat().st_ino == inode


# ---------------------------------------------------------------- option precedence


def test_option_precedence_pyproject_then_environment_then_command_line(tmp_path: Path):
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        '[tool.vpatch]\npatches-dir = "from-pyproject"\ncheckouts_dir = "co-pyproject"\n'
        'cache-dir = "cache-pyproject"\nindex-url = "http://pyproject.example/simple/"\n'
    )
    options = load_options({"root": str(root)})
    assert options.patches_dir == root / "from-pyproject"
    assert options.checkouts_dir == root / "co-pyproject"  # the underscore spelling is accepted too
    assert options.cache_dir == root / "cache-pyproject"
    assert options.index_url == "http://pyproject.example/simple"
    with env_var("VPATCH_PATCHES_DIR", "from-env"), env_var("VPATCH_INDEX_URL", "http://env.example/simple"):
        options = load_options({"root": str(root)})
        assert options.patches_dir == root / "from-env"
        assert options.index_url == "http://env.example/simple"
        assert options.checkouts_dir == root / "co-pyproject"  # not set in the environment: pyproject's
        options = load_options({"root": str(root), "patches_dir": "from-cli", "index_url": None})
        assert options.patches_dir == root / "from-cli"
        assert options.index_url == "http://env.example/simple"  # an absent flag does not hide the environment
    assert load_options({"root": str(tmp_path / "elsewhere")}).patches_dir == tmp_path / "elsewhere" / "patches"


def test_concurrent_imports_into_one_series_keep_every_patch(warm: Workspace, tmp_path: Path):
    """Each import reads the series, adds its patch and writes the series back: they must take turns."""
    writers = 4
    diffs = []
    for number in range(writers):
        diff = tmp_path / f"add-{number}.diff"
        diff.write_text(
            f"--- /dev/null\n+++ b/vllm/extra_{number}.py\n@@ -0,0 +1,1 @@\n+VALUE = {number}\n", encoding="utf-8"
        )
        diffs.append(diff)
    for trial in range(2):
        root = fresh_project(warm, f"imports-{trial}")
        results = start_together(
            [
                vpatch_command(
                    warm, root, "import", str(diff), "--version", "1.0", *DIFF_AUTHORSHIP, "--feature", "kv-routing"
                )
                for diff in diffs
            ]
        )
        assert [r.returncode for r in results] == [0] * writers, [r.stderr for r in results]
        series = (root / "patches" / "vllm-1.0" / "series").read_text(encoding="utf-8")
        imported = sorted(line.split("-", 1)[1] for line in series.splitlines() if line.endswith(".patch"))
        assert imported == [f"kv-routing-vllm-extra-{n}.patch" for n in range(writers)], f"trial {trial}: {series}"
