"""Real vLLM venvs and wheels for the integration tests (the pinned artifacts, cached)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toolkit.project import Project


def stock_env_of(project: Project, version: str) -> Path:
    """A venv with the pinned stock vLLM wheel of `version` (cached)."""
    from toolkit.conformance.envs import vllm_env
    from toolkit.index import fetch_artifact

    pin = project.pins.get(version)
    wheel = fetch_artifact(project.options.cache_dir, pin.wheels[0])
    return vllm_env(project.options.cache_dir, wheel, sha256=pin.wheels[0].sha256)


def patched_wheel_of(project: Project, version: str, out: Path) -> Path:
    """The dynamo-base overlay wheel of the committed series of `version`."""
    from toolkit.wheel.overlay import build_overlay

    return build_overlay(project, project.pins.get(version), out).path
