"""`vpatch pin add --wheel-platform`: only the stock wheels for the named platforms are pinned and downloaded
(the 0.10.2 and 0.11.1 pins: no 399 MB aarch64 wheel in a cold `pin verify`).

Synthetic: vllm 1.0 on the local test index with an x86_64 wheel and the same wheel under an aarch64 tag.
"""

from __future__ import annotations

import shutil

from tests.unit.wheel.test_flavor import _downloaded, the_error
from toolkit.cache import sha256_file
from toolkit.pins import parse_pins

X86 = "manylinux1_x86_64"


def publish_two_platforms(ws):
    ws.publish("1.0")  # an sdist and an x86_64 wheel
    (x86,) = (ws.root / "build").glob(f"vllm-1.0-*{X86}.whl")
    arm = x86.with_name(x86.name.replace(X86, "manylinux2014_aarch64"))
    shutil.copy(x86, arm)
    ws.index.add(arm)
    return x86, arm


def test_only_the_named_platforms_wheels_are_pinned_and_downloaded(workspace, capsys):
    ws = workspace
    x86, arm = publish_two_platforms(ws)
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--wheel-platform", "x86_64") == 0
    assert "1 wheel(s)" in capsys.readouterr().out
    (pin,) = parse_pins(ws.patches / "pins.toml", (ws.patches / "pins.toml").read_bytes()).pins
    assert [w.file for w in pin.wheels] == [x86.name]
    assert sha256_file(x86) in _downloaded(ws)
    # both wheels have the same bytes here, so the check is by the file recorded, not by the hash
    assert arm.name not in (ws.patches / "pins.toml").read_text()


def test_without_the_option_every_wheel_is_pinned(workspace, capsys):
    ws = workspace
    x86, arm = publish_two_platforms(ws)
    assert ws.run("pin", "add", "1.0") == 0
    (pin,) = parse_pins(ws.patches / "pins.toml", (ws.patches / "pins.toml").read_bytes()).pins
    assert sorted(w.file for w in pin.wheels) == sorted([x86.name, arm.name])


def test_a_platform_the_index_has_no_wheel_for_is_refused_in_one_line(workspace, capsys):
    ws = workspace
    publish_two_platforms(ws)
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--wheel-platform", "s390x") == 1
    error = the_error(capsys.readouterr().err)
    assert "no wheel for --wheel-platform s390x" in error and "manylinux2014_aarch64" in error, error
    assert not (ws.patches / "pins.toml").exists()


def test_the_option_needs_stock_wheels(workspace, capsys):
    ws = workspace
    publish_two_platforms(ws)
    capsys.readouterr()
    assert ws.run("pin", "add", "1.0", "--no-wheel", "--wheel-platform", "x86_64") == 1
    assert "cannot go with --no-wheel" in the_error(capsys.readouterr().err)
    assert not (ws.patches / "pins.toml").exists()
