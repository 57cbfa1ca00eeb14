"""A wheel's API surface is kept per (wheel sha256, package, reader source): the same surface as read from the
wheel, reused while the key is the same, read again for another key, a damaged file or --no-reuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import make_wheel
from toolkit.cache import sha256_file
from toolkit.conformance.api_surface import wheel_surface
from toolkit.conformance.surface_cache import kept_surface, surface_key

SOURCE = """
def generate(prompt, n=1, *args, seed: int | None = None, **kwargs): ...
class Engine:
    steps: int
    def step(self, /, budget, *, limit=None): ...
    def _private(self): ...
VERSION = "1"
"""


@pytest.fixture
def wheels(tmp_path: Path) -> tuple[Path, Path]:
    one = make_wheel(tmp_path / "one", "1.0", {"vllm/__init__.py": "", "vllm/engine.py": SOURCE})
    two = make_wheel(tmp_path / "two", "1.0", {"vllm/__init__.py": "", "vllm/engine.py": SOURCE + "def added(): ...\n"})
    return one, two


def kept_files(cache: Path) -> list[Path]:
    return sorted((cache / "conform" / "api-surface").glob("*.json"))


def test_the_kept_surface_is_the_one_read_from_the_wheel_and_is_reused(tmp_path, wheels):
    one, _ = wheels
    cache, sha = tmp_path / "cache", sha256_file(one)
    read = wheel_surface(str(one))
    assert read["vllm.engine.Engine.step"].params == (
        ("self", "positional-only", False),
        ("budget", "positional", False),
        ("limit", "keyword-only", True),
    )
    assert kept_surface(cache, one, sha, "vllm") == read
    (kept,) = kept_files(cache)
    assert kept.name == f"{surface_key(sha, 'vllm')}.json"
    one.unlink()  # a reused surface does not open the wheel
    assert kept_surface(cache, one, sha, "vllm") == read


def test_another_wheel_or_package_is_another_key(tmp_path, wheels):
    one, two = wheels
    cache = tmp_path / "cache"
    first = kept_surface(cache, one, sha256_file(one), "vllm")
    second = kept_surface(cache, two, sha256_file(two), "vllm")
    assert set(second) - set(first) == {"vllm.engine.added"}
    assert kept_surface(cache, one, sha256_file(one), "engine") == {}  # no such package in the wheel
    assert len(kept_files(cache)) == 3
    assert len({surface_key(sha256_file(one), "vllm"), surface_key(sha256_file(two), "vllm")}) == 2


def test_a_damaged_or_foreign_kept_file_is_read_again_from_the_wheel(tmp_path, wheels):
    one, _ = wheels
    cache, sha = tmp_path / "cache", sha256_file(one)
    read = kept_surface(cache, one, sha, "vllm")
    (kept,) = kept_files(cache)
    wrong_shape = '{"key": "' + kept.stem + '", "symbols": [[1]]}\n'
    for damage in ("{not json", '{"key": "another", "symbols": []}\n', wrong_shape):
        kept.write_text(damage, encoding="utf-8")
        assert kept_surface(cache, one, sha, "vllm") == read
        assert kept_surface(cache, one, sha, "vllm") == read  # rewritten: now reused
        assert "vllm.engine.generate" in kept.read_text(encoding="utf-8")


def test_no_reuse_reads_the_wheel_again_and_rewrites_the_kept_file(tmp_path, wheels):
    one, two = wheels
    cache, sha = tmp_path / "cache", sha256_file(one)
    kept_surface(cache, one, sha, "vllm")
    # the same sha256 given for another wheel's bytes: reuse returns the kept one, --no-reuse reads the file
    assert "vllm.engine.added" not in kept_surface(cache, two, sha, "vllm")
    assert "vllm.engine.added" in kept_surface(cache, two, sha, "vllm", reuse=False)
    assert "vllm.engine.added" in kept_surface(cache, one, sha, "vllm")  # what --no-reuse read is kept
