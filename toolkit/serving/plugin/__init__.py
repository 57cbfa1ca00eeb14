"""The dynamo-base plugin's source: a package that runs INSIDE a stock vLLM venv, beside stock vLLM.

`dynamo_base_plugin/` is shipped as it is, by `vpatch plugin build` (toolkit/plugin/), as a pure-Python wheel
(`dynamo_base_plugin-<version>-py3-none-any.whl`); vpatch itself never imports it (the builder reads its files
by path). It imports nothing from vpatch: only vLLM, msgspec, pyzmq and the standard library, which every
vLLM venv has. See docs/plugin.md.

This module is the launcher side, used by the core: standard library only.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = "dynamo_base_plugin"
SOURCE = Path(__file__).resolve().parent / PACKAGE
"""The plugin package's directory: every `*.py` in it goes into the wheel, under `dynamo_base_plugin/`."""
