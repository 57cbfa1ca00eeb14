"""What the cpu tier takes from a release that moved things: vLLM's own test files under the release's names
(with the helpers they import), and the import-time dependencies beyond the shared runtime layer."""

from __future__ import annotations

from pathlib import Path

from tests.harness.repos import git_repo
from toolkit.conformance.envs import on_path
from toolkit.conformance.upstream_tests import TEST_FILES, lay_out_release_tests, release_test_files
from toolkit.envs import VLLM_CPU_RUNTIME, runtime_extras

CORE = "tests/v1/core/"


def tree(*names: str) -> dict[str, str]:
    return {CORE + name: f"# {name}\n" for name in names}


def test_a_release_before_the_rename_keeps_the_listed_files_and_has_no_helpers(tmp_path: Path) -> None:
    names = ("test_prefix_caching.py", "test_specialized_manager.py", "test_kv_cache_utils.py", "test_scheduler.py")
    repo = git_repo(tmp_path / "r", tree(*names, "__init__.py"))
    tests, helpers = release_test_files(repo, repo.out("rev-parse", "HEAD"))
    assert tests == TEST_FILES and helpers == ()


def test_a_release_after_the_rename_gives_the_new_name_and_its_helpers(tmp_path: Path) -> None:
    names = ("test_prefix_caching.py", "test_single_type_kv_cache_manager.py", "test_kv_cache_utils.py")
    repo = git_repo(tmp_path / "r", tree(*names, "test_scheduler.py", "utils.py", "test_other.py"))
    tests, helpers = release_test_files(repo, repo.out("rev-parse", "HEAD"))
    assert tests == (
        CORE + "test_prefix_caching.py",
        CORE + "test_single_type_kv_cache_manager.py",
        CORE + "test_kv_cache_utils.py",
        CORE + "test_scheduler.py",
    )
    assert helpers == (CORE + "utils.py",)


def test_runtime_extras_start_at_the_release_that_imports_them() -> None:
    assert runtime_extras((0, 9, 1)) == () and runtime_extras((0, 8, 4)) == ()
    later = runtime_extras((0, 10, 2))
    assert {"cbor2", "setproctitle", "pybase64", "openai-harmony", "diskcache"} <= set(later)
    assert runtime_extras((0, 10, 3)) == later  # a list applies from its release on
    assert not set(later) & set(VLLM_CPU_RUNTIME)  # a layer over the runtime layer, not a copy of it
    newer = runtime_extras((0, 11, 1))
    assert newer[: len(later)] == later and {"xgrammar==0.1.25", "numba==0.68.1"} <= set(newer)
    # 0.11.1 needs a newer transformers than the runtime layer's: its layer carries one ...
    assert "transformers==4.57.1" in newer and "transformers==4.52.4" in VLLM_CPU_RUNTIME
    # 0.13.0's model modules import einops; 0.11.1's layer does not carry it
    assert "einops==0.8.2" in runtime_extras((0, 13, 0)) and "einops==0.8.2" not in newer
    # 0.16.0's scheduler and engine core import mistral_common (vllm/tokenizers/mistral.py); 0.13.0's do not
    at_16 = runtime_extras((0, 16, 0))
    assert at_16[: len(runtime_extras((0, 13, 0)))] == runtime_extras((0, 13, 0))
    assert "mistral-common==1.9.0" in at_16 and "pycountry==26.2.16" in at_16
    assert not any(req.startswith("mistral-common") for req in runtime_extras((0, 15, 9)))
    # 0.22's vllm/v1/utils.py imports uvloop at module level; 0.16.0's layers do not carry it
    at_22 = runtime_extras((0, 22, 1))
    assert at_22[: len(at_16)] == at_16 and "uvloop==0.23.0" in at_22
    assert not any(req.startswith("uvloop") for req in runtime_extras((0, 21, 9)))


def test_release_layers_come_before_the_runtime_layer_on_the_path() -> None:
    # ... which only wins if the release's layer is found first
    runtime, extra, nixl = Path("runtime"), Path("runtime-extra"), Path("nixl")
    assert on_path([runtime, extra, nixl]) == [extra, nixl, runtime]
    assert on_path([runtime]) == [runtime]


def test_a_helper_imported_by_its_absolute_name_is_laid_out_at_its_path(tmp_path: Path) -> None:
    # 0.11.1's tests/v1/core/utils.py imports tests.v1.kv_connector.unit.utils
    names = ("test_prefix_caching.py", "test_single_type_kv_cache_manager.py", "test_kv_cache_utils.py")
    files = {**tree(*names, "test_scheduler.py", "utils.py"), "tests/v1/kv_connector/unit/utils.py": "# kvc\n"}
    repo = git_repo(tmp_path / "r", files)
    root = tmp_path / "run"
    root.mkdir()
    lay_out_release_tests(repo, repo.out("rev-parse", "HEAD"), root)
    assert (root / "tests_v1_core" / "test_scheduler.py").is_file()
    assert (root / "tests/v1/kv_connector/unit/utils.py").read_text() == "# kvc\n"
    for package in ("tests", "tests/v1", "tests/v1/kv_connector", "tests/v1/kv_connector/unit"):
        assert (root / package / "__init__.py").is_file(), package


def test_a_release_without_the_helper_lays_out_only_its_core_tests(tmp_path: Path) -> None:
    names = ("test_prefix_caching.py", "test_single_type_kv_cache_manager.py", "test_kv_cache_utils.py")
    repo = git_repo(tmp_path / "r", tree(*names, "test_scheduler.py", "utils.py"))
    root = tmp_path / "run"
    root.mkdir()
    lay_out_release_tests(repo, repo.out("rev-parse", "HEAD"), root)
    assert (root / "tests_v1_core" / "utils.py").is_file() and not (root / "tests").exists()
