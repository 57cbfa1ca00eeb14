"""Every exit code the `vpatch` command line uses, in one table (scripts and launchers branch on them)."""

from __future__ import annotations

OK = 0
# A command found problems (check, verify, build, apply, ci, ...) or an expected error was reported
# (`VpatchError`, a git command that failed): one line on stderr.
FAILED = 1
# The command line itself is wrong; argparse prints the usage and exits with 2.
USAGE = 2
# `vpatch doctor`: what the inspected interpreter's vLLM is (0 above: dynamo-base, intact).
DOCTOR_STOCK = 3
DOCTOR_DAMAGED = 4
DOCTOR_MISSING = 5
# An unexpected exception, i.e. a bug in vpatch: one line, the traceback in the crash log
# (EX_SOFTWARE from sysexits.h, apart from every code a command returns).
INTERNAL = 70
# Ctrl-C: 128 + SIGINT, as shells report a process killed by the signal.
INTERRUPTED = 130
