"""Runs inside a vLLM venv, by path: how far a vLLM build's Python files import here.

Imports nothing from vpatch. Prints one `VPATCH-IMPORTS {json}` line: the installed version, the platform
vLLM selects (`current_platform`), and for each module named on the command line `ok` or the last line
of its error (e.g. the compiled extension's missing GLIBCXX, or a module that needs triton).
"""

from __future__ import annotations

import importlib
import json
import sys


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:400]


def main(modules: list[str]) -> None:
    result: dict = {}
    import vllm

    result["vllm_version"] = vllm.__version__
    try:
        from vllm.platforms import current_platform

        result["platform"] = f"{type(current_platform).__name__} ({current_platform.device_type})"
    except BaseException as exc:  # a platform that cannot be chosen is what this probe reports
        result["platform"] = _error(exc)
    result["modules"] = {}
    for name in modules:
        try:
            importlib.import_module(name)
            result["modules"][name] = "ok"
        except BaseException as exc:  # ImportError, OSError from a .so, SystemExit from a module's own checks
            result["modules"][name] = _error(exc)
    print("VPATCH-IMPORTS " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
