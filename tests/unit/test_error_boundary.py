"""toolkit.cli.main is the one error boundary: one line on stderr for every outcome, exit codes from one table,
and a crash log (traceback, argv, versions) for the exceptions nobody expected."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import crashlog, exit_codes
from toolkit.commands import pin
from toolkit.errors import VpatchError
from toolkit.git import Git

INTERNAL_LINE = re.compile(r"vpatch: internal error: (?P<what>.+) \((?:details in (?P<log>.+)|no crash log: .+)\)")


def crash_with(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """`vpatch pin list` raises `error` from inside the command, as a bug in it would."""

    def broken(args: object, options: object) -> int:
        raise error

    monkeypatch.setattr(pin, "run_list", broken)


def one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), err
    return lines[0]


def test_an_unexpected_exception_is_one_line_and_a_record_in_the_crash_log(pinned, capsys, monkeypatch):
    ws = pinned
    crash_with(monkeypatch, RuntimeError("the index went\nsideways"))
    capsys.readouterr()
    assert ws.run("pin", "list") == exit_codes.INTERNAL
    err = capsys.readouterr().err
    match = INTERNAL_LINE.fullmatch(one_line(err))
    assert match, err
    assert match["what"] == "RuntimeError: the index went sideways"
    log = Path(match["log"])
    assert log == ws.cache / "log" / "vpatch.log"
    text = log.read_text()
    assert text.startswith("### vpatch internal error at ")
    assert f"argv: vpatch --root {ws.root} --cache-dir {ws.cache} --index-url {ws.index.url} pin list\n" in text
    assert f"cwd: {Path.cwd()}\n" in text
    assert "vpatch: 0.1.0\n" in text
    assert f"python: {sys.version_info.major}.{sys.version_info.minor}." in text
    assert re.search(r"^git: git version \d+\.\d+", text, re.M), text
    assert "Traceback (most recent call last):" in text
    assert "in broken\n    raise error" in text and text.rstrip().endswith("RuntimeError: the index went\nsideways")

    # A second crash appends its own record; the first stays as it was.
    crash_with(monkeypatch, KeyError("patches"))
    assert ws.run("pin", "list") == exit_codes.INTERNAL
    assert INTERNAL_LINE.fullmatch(one_line(capsys.readouterr().err))["what"] == "KeyError: 'patches'"
    again = log.read_text()
    assert again.startswith(text) and again.count("### vpatch internal error at ") == 2
    assert again.rstrip().endswith("KeyError: 'patches'")


def test_a_crash_before_the_options_load_logs_to_the_cache_the_environment_names(
    workspace, capsys, monkeypatch, tmp_path
):
    def broken_options(*args: object, **kwargs: object) -> None:
        raise AttributeError("'NoneType' object has no attribute 'cache_dir'")

    monkeypatch.setattr("toolkit.cli.load_options", broken_options)
    monkeypatch.setenv("VPATCH_CACHE_DIR", str(tmp_path / "env-cache"))
    from toolkit.cli import main

    assert main(["pin", "list"]) == exit_codes.INTERNAL
    match = INTERNAL_LINE.fullmatch(one_line(capsys.readouterr().err))
    assert match and match["log"] == str(tmp_path / "env-cache" / "log" / "vpatch.log")
    assert "argv: vpatch pin list\n" in Path(match["log"]).read_text()


def test_an_unwritable_crash_log_still_gives_the_one_line(pinned, capsys, monkeypatch):
    ws = pinned
    (ws.cache / "log").write_text("a file where the log directory would go")
    crash_with(monkeypatch, ValueError("bad"))
    capsys.readouterr()
    assert ws.run("pin", "list") == exit_codes.INTERNAL
    line = one_line(capsys.readouterr().err)
    assert line.startswith("vpatch: internal error: ValueError: bad (no crash log: "), line
    assert (ws.cache / "log").read_text() == "a file where the log directory would go"


def test_a_full_crash_log_is_rotated_to_one_older_generation(pinned, capsys, monkeypatch):
    ws = pinned
    log = ws.cache / "log" / "vpatch.log"
    log.parent.mkdir(parents=True)
    old = b"x" * (crashlog.ROTATE_BYTES + 1)
    log.write_bytes(old)
    crash_with(monkeypatch, RuntimeError("after rotation"))
    assert ws.run("pin", "list") == exit_codes.INTERNAL
    assert (log.parent / "vpatch.log.1").read_bytes() == old
    text = log.read_text()
    assert text.startswith("### vpatch internal error at ") and text.count("### vpatch internal error") == 1


def test_ctrl_c_is_one_line_and_exit_130_without_a_crash_log(pinned, capsys, monkeypatch):
    ws = pinned
    crash_with(monkeypatch, KeyboardInterrupt())
    capsys.readouterr()
    assert ws.run("pin", "list") == exit_codes.INTERRUPTED == 130
    assert capsys.readouterr().err == "vpatch: interrupted\n"
    assert not (ws.cache / "log").exists()


def test_expected_errors_are_one_line_and_exit_1_without_a_crash_log(pinned, capsys, monkeypatch, tmp_path):
    ws = pinned
    crash_with(monkeypatch, VpatchError("no such patch", path=tmp_path / "series", line=3))
    capsys.readouterr()
    assert ws.run("pin", "list") == exit_codes.FAILED == 1
    assert capsys.readouterr().err == "vpatch: error: series:3: no such patch\n"  # relative to the cwd, tmp_path

    def git_fails(args: object, options: object) -> int:
        Git(tmp_path).run("rev-parse", "--verify", "refs/heads/nowhere")  # tmp_path is no repository
        return 0

    monkeypatch.setattr(pin, "run_list", git_fails)
    assert ws.run("pin", "list") == exit_codes.FAILED
    assert one_line(capsys.readouterr().err).startswith("vpatch: error: git rev-parse --verify failed: ")
    assert not (ws.cache / "log").exists()


def test_a_wrong_command_line_exits_with_the_usage_code(pinned, capsys):
    with pytest.raises(SystemExit) as info:
        pinned.run("no-such-command")
    assert info.value.code == exit_codes.USAGE
    assert "invalid choice: 'no-such-command'" in capsys.readouterr().err


def test_every_exit_code_in_the_table_means_one_thing():
    codes = {name: value for name, value in vars(exit_codes).items() if name.isupper()}
    assert set(codes) >= {"OK", "FAILED", "USAGE", "INTERNAL", "INTERRUPTED", "DOCTOR_STOCK"}
    assert len(set(codes.values())) == len(codes), codes
    assert all(0 <= value < 256 for value in codes.values())


def test_the_process_exits_with_the_internal_code_and_prints_no_traceback(pinned, tmp_path):
    """The same boundary seen from outside: a real process, its exit status and its whole stderr."""
    ws = pinned
    script = (
        "import sys\n"
        "from toolkit.cli import main\n"
        "from toolkit.commands import pin\n"
        "def broken(args, options):\n"
        "    raise ZeroDivisionError('division by zero')\n"
        "pin.run_list = broken\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    argv = ["--root", str(ws.root), "--cache-dir", str(ws.cache), "pin", "list"]
    proc = subprocess.run([sys.executable, "-c", script, *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == exit_codes.INTERNAL, proc.stderr
    match = INTERNAL_LINE.fullmatch(one_line(proc.stderr))
    assert match and match["what"] == "ZeroDivisionError: division by zero", proc.stderr
    assert "ZeroDivisionError: division by zero" in Path(match["log"]).read_text()
