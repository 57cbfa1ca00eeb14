"""The command line loads only the invoked command's module, and still parses every command line right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from toolkit.cli import requested_command

PROBE = """
import json, sys
from toolkit.cli import main
code = main(sys.argv[1:])
loaded = sorted(m.rsplit(".", 1)[1] for m in sys.modules if m.startswith("toolkit.commands."))
print("VPATCH-PROBE " + json.dumps({"code": code, "loaded": loaded}))
"""


def probe(*argv: str, cwd: Path | None = None) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=120, cwd=cwd)
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("VPATCH-PROBE "))
    return json.loads(line.removeprefix("VPATCH-PROBE "))


def test_only_the_invoked_command_is_loaded(pinned):
    ws = pinned
    result = probe("--root", str(ws.root), "--cache-dir", str(ws.cache), "pin", "list", "--json")
    assert result == {"code": 0, "loaded": ["pin"]}


def test_an_option_value_that_names_a_command_does_not_pick_the_command(pinned, tmp_path):
    ws = pinned
    # A cache directory called "status": the guess takes it for the command; the command is `pin list`.
    argv = ["--root", str(ws.root), "--cache-dir", "status", "pin", "list", "--json"]
    assert requested_command(argv) == "status"
    result = probe(*argv, cwd=tmp_path)
    assert result["code"] == 0 and "pin" in result["loaded"]


def test_help_lists_every_command():
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for name in ("pin", "rebase", "review", "retire", "kv-watch", "import", "ci", "report", "config"):
        assert f"    {name} " in proc.stdout, name
    assert "migrate-config" not in proc.stdout  # one command migrates a configuration: `config migrate`


def test_help_before_a_command_is_the_top_level_help():
    """`vpatch -h build` prints what `vpatch -h` prints (every command), not a list of `build` alone."""
    top = subprocess.run([sys.executable, "-m", "toolkit.cli", "-h"], capture_output=True, text=True)
    for argv in (["-h", "build"], ["--help", "build", "0.8.4"]):
        proc = subprocess.run([sys.executable, "-m", "toolkit.cli", *argv], capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout == top.stdout, argv
    assert "    rebase " in top.stdout and "    build " in top.stdout
    proc = subprocess.run([sys.executable, "-m", "toolkit.cli", "build", "-h"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("usage: vpatch build ") and "--no-verify" in proc.stdout


def test_config_migrate_loads_only_its_command(tmp_path):
    deploy = tmp_path / "d.json"
    deploy.write_text('{"model": "/m", "kv_events_config": {"enable_kv_cache_events": true}}', encoding="utf-8")
    result = probe("config", "migrate", str(deploy), "--to", "0.32.0", cwd=tmp_path)
    assert result == {"code": 0, "loaded": ["config"]}


def test_the_placeholders_of_the_other_commands_still_name_the_command_given():
    """With one command loaded, the others share two placeholder parsers as aliases; the parse still says
    which command the line names (so a wrong guess is seen and the full parser takes over)."""
    from toolkit.cli import build_parser

    args, _ = build_parser("build").parse_known_args(["--root", "build", "status"])
    assert args.command == "status" and not hasattr(args, "run")
    args, _ = build_parser("build").parse_known_args(["--cache-dir", "status", "pin", "list"])
    assert args.command == "pin" and not hasattr(args, "run")
    args, _ = build_parser("build").parse_known_args(["build", "0.8.4", "--no-verify"])
    assert args.command == "build" and args.versions == ["0.8.4"] and args.no_verify
    parser = build_parser("")
    for name in ("pin", "retire", "kv-watch"):
        assert parser.parse_known_args([name])[0].command == name
