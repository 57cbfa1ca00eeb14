"""One module per `vpatch` subcommand; each has `register(subparsers)` and sets `run`.

Modules are imported only when needed: `vpatch rebase ...` loads the rebase command alone (every module
pulls in its part of the toolkit, and loading them all cost about 0.1 s per run).
"""

from __future__ import annotations

import importlib
from types import ModuleType

# Subcommand name -> module, in the order `vpatch --help` lists them.
COMMAND_MODULES: dict[str, str] = {
    "pin": "pin",
    "fetch": "fetch",
    "apply": "apply",
    "export": "export",
    "import": "import_",
    "feature": "feature",
    "check": "check",
    "rebase": "rebase",
    "review": "review",
    "resolutions": "resolutions",
    "status": "status",
    "build": "build",
    "verify": "verify",
    "plugin": "plugin",
    "doctor": "doctor",
    "config": "config",
    "kv-watch": "kv_watch",
    "conform": "conform",
    "model": "model",
    "cache": "cache",
    "ci": "ci",
    "report": "report",
    "retire": "retire",
}


def load_command(name: str) -> ModuleType:
    return importlib.import_module(f"toolkit.commands.{COMMAND_MODULES[name]}")
