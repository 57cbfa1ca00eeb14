"""ruff (lint and format) and mypy over the tree, so the README's one test command runs them too (as CI does)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.paths import REPO_ROOT

ROOT = REPO_ROOT
CHECKED = ("toolkit", "tests", "bench")


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    # The tools of this interpreter (the test extra installs them), run where pyproject.toml configures them.
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(("ruff", "check", *CHECKED), id="ruff-check"),
        pytest.param(("ruff", "format", "--check", *CHECKED), id="ruff-format"),
        pytest.param(("mypy",), id="mypy"),  # [tool.mypy] names the packages
    ],
)
def test_the_tree_is_clean(argv: tuple[str, ...]) -> None:
    assert (ROOT / "pyproject.toml").is_file(), ROOT
    proc = run_tool(*argv)
    assert proc.returncode == 0, f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}"
