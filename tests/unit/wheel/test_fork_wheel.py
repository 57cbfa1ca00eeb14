"""`vpatch verify` on a wheel vpatch did not build: a fork's own recipe (unpack the stock wheel, patch it,
repack it) applied by the test to the synthetic stock wheel the test index serves. Read against the stock
wheel of its pin; the wheel's own requirements in the install check (a real `pip install` of a small PyPI
package); an import failure named with the patch; a dist name the series' code contradicts."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import zipfile
from pathlib import Path

import pytest

from tests.harness import module_text
from tests.unit.wheel.test_wheel_overlay import KV_EVENTS, PENDING, SCHEDULER, STOCK, make_series

TAG = "cp38-abi3-manylinux1_x86_64"
LOOKUP = 'from importlib.metadata import version\n\nVERSION = version("ai_dynamo_vllm")\n'
INIT_IMPORTS = "import tomli_w  # noqa: F401\nimport fancy_kernels  # noqa: F401\n"


def fork_recipe(
    stock: Path, out: Path, version: str, changes: dict[str, str | bytes], *, requires: tuple[str, ...] = ()
) -> Path:
    """What a fork's build script does: unpack the stock wheel, change files, repack under a new version
    (dist-info renamed, METADATA and RECORD rewritten, the version file regenerated)."""
    with zipfile.ZipFile(stock) as archive:
        members = {name: archive.read(name) for name in archive.namelist() if not name.endswith("/")}
    old_info = next(n.split("/")[0] for n in members if n.split("/")[0].endswith(".dist-info"))
    info = f"vllm-{version}.dist-info"
    files = {
        name.replace(old_info, info, 1) if name.startswith(old_info) else name: data for name, data in members.items()
    }
    files["vllm/_version.py"] = f"__version__ = version = {version!r}\n__version_tuple__ = (1, 0)\n".encode()
    wheel_file = files[f"{info}/WHEEL"].decode()
    files[f"{info}/WHEEL"] = "".join(
        f"Tag: {TAG}\n" if line.startswith("Tag:") else line + "\n" for line in wheel_file.splitlines()
    ).encode()
    for name, data in changes.items():
        files[name] = data.encode() if isinstance(data, str) else data
    meta = f"Metadata-Version: 2.1\nName: vllm\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    files[f"{info}/METADATA"] = (meta + "\nA fork.\n").encode()
    rows = [
        [
            name,
            "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode(),
            str(len(data)),
        ]
        for name, data in files.items()
        if name != f"{info}/RECORD"
    ]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows([*rows, [f"{info}/RECORD", "", ""]])
    files[f"{info}/RECORD"] = text.getvalue().encode()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"vllm-{version}-{TAG}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def verify(ws, capsys, wheel: Path, *args: str) -> tuple[int, dict, str]:
    capsys.readouterr()
    code = ws.run("verify", str(wheel), "--json", *args)
    out, err = capsys.readouterr()
    (report,) = json.loads(out)["wheels"]
    return code, report, err


def checks(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def forked(pinned):
    """1.0 pinned with a series: the scheduler changed, KV events added (which look the dist up by name)."""
    make_series(
        pinned,
        [
            ({"vllm/core/scheduler.py": SCHEDULER}, "[Core] scale value twenty", PENDING),
            ({"vllm/core/kv_events.py": KV_EVENTS + LOOKUP}, "[V1] publish kv events", PENDING),
        ],
    )
    return pinned


def test_a_fork_wheel_is_read_against_the_stock_wheel_of_its_pin(forked, capsys, tmp_path):
    ws = forked
    stock = ws.index.files_dir / STOCK
    changes = {"vllm/core/scheduler.py": SCHEDULER, "vllm/core/kv_events.py": KV_EVENTS + LOOKUP}
    wheel = fork_recipe(stock, tmp_path / "fork", "1.0.post1", changes)
    code, report, err = verify(ws, capsys, wheel, "--no-install-check")
    found = checks(report)
    assert code == 0 and report["ok"], report
    assert found["provenance"]["detail"].endswith("not built by vpatch")
    assert found["stock-diff"]["detail"] == (
        f"against the stock {STOCK}: 2 modified (vllm/_version.py, vllm/core/scheduler.py), "
        "1 added (vllm/core/kv_events.py), 0 removed; 1 compiled file(s) unchanged"
    )
    assert found["changed-set"]["ok"] and "the ones the vllm 1.0 series touches" in found["changed-set"]["detail"]

    # The series' code looks itself up as ai_dynamo_vllm, the wheel is vllm: warned, naming patch and line.
    patch = ws.series_dir("1.0") / "0002-v1-publish-kv-events.patch"
    line = next(n for n, t in enumerate(patch.read_text().splitlines(), 1) if "ai_dynamo_vllm" in t)
    (warning,) = report["warnings"]
    assert warning.startswith(
        f"{patch.name}:{line} (vllm/core/kv_events.py): the code looks itself up as 'ai_dynamo_vllm'"
    )
    assert f"warning: {wheel.name}: {patch.name}:{line}" in err

    # A file the series does not touch, and a compiled file rebuilt: both named, the verify fails.
    extra = {**changes, "vllm/core/block_pool.py": module_text("block_pool") + "X = 1\n", "vllm/_C.abi3.so": b"rebuilt"}
    other = fork_recipe(stock, tmp_path / "other", "1.0.post2", extra)
    code, report, err = verify(ws, capsys, other, "--no-install-check", "--reject")
    found = checks(report)
    assert code == 1 and not found["stock-diff"]["ok"] and not found["changed-set"]["ok"]
    assert "1 compiled file(s) unchanged" not in found["stock-diff"]["detail"]
    assert "1 differ (vllm/_C.abi3.so)" in found["stock-diff"]["detail"]
    assert "changed but not in the vllm 1.0 series: ['vllm/core/block_pool.py']" in found["changed-set"]["detail"]
    assert not other.exists() and (tmp_path / "other" / "rejected" / other.name).is_file()
    capsys.readouterr()
    assert ws.run("verify", str(tmp_path / "other" / "rejected" / other.name), "--no-install-check") == 1
    err = capsys.readouterr().err
    assert any(line.startswith(f"✗ verify {other.name}") for line in err.splitlines()), err  # a red step


def test_a_release_without_a_stock_wheel_pinned_is_said(forked, capsys, tmp_path):
    wheel = fork_recipe(forked.index.files_dir / STOCK, tmp_path, "2.0.post1", {})
    code, report, _ = verify(forked, capsys, wheel, "--no-install-check")
    assert code == 1
    assert checks(report)["stock-diff"]["detail"] == "no stock wheel of vllm 2.0 is pinned here to compare with"


def test_the_install_check_holds_the_wheels_requirements_and_names_the_patch_of_a_missing_import(
    pinned, capsys, tmp_path
):
    """Real pip and uv installs into fresh venvs; tomli-w comes from PyPI into the requirements layer."""
    ws = pinned
    init = "from vllm._version import __version__, __version_tuple__  # noqa: F401\n" + INIT_IMPORTS
    (name,) = make_series(ws, [({"vllm/__init__.py": init}, "[Core] fork imports", PENDING)])
    patch = (ws.series_dir("1.0") / name).read_text().splitlines()
    line_of = {
        m: next(n for n, t in enumerate(patch, 1) if t.startswith(f"+import {m}")) for m in ("tomli_w", "fancy_kernels")
    }
    stock = ws.index.files_dir / STOCK

    # Without the requirement declared, tomli_w is missing: named, with the patch and line that import it.
    bare = fork_recipe(stock, tmp_path / "bare", "1.0.post1", {"vllm/__init__.py": init})
    code, report, _ = verify(ws, capsys, bare, "--no-runtime")
    detail = checks(report)["install-pip"]["detail"]
    assert code == 1 and not checks(report)["install-pip"]["ok"]
    assert (
        f"(module tomli_w: tomli_w is imported by {name}:{line_of['tomli_w']} (vllm/__init__.py): import tomli_w"
        in detail
    )

    # Declared in Requires-Dist (and a CUDA-bound one that is left out): tomli_w now imports, fancy_kernels
    # (which nothing provides) is the failure, named the same way.
    declared = fork_recipe(
        stock, tmp_path / "declared", "1.0.post1", {"vllm/__init__.py": init}, requires=("tomli-w", "xformers==0.0.29")
    )
    code, report, _ = verify(ws, capsys, declared, "--no-runtime")
    for installer in ("install-pip", "install-uv"):
        detail = checks(report)[installer]["detail"]
        assert "No module named 'fancy_kernels'" in detail, detail
        assert f"fancy_kernels is imported by {name}:{line_of['fancy_kernels']} (vllm/__init__.py)" in detail
        assert "the wheel's requirements tomli-w installed" in detail
        assert "left out: xformers==0.0.29: built for CUDA torch" in detail


def test_requirements_stock_declares_too_are_left_to_the_runtime_layer(pinned, tmp_path):
    """Only what the fork asks for beyond stock vLLM goes into the layer (nothing is installed here)."""
    from toolkit.wheel.wheel_reqs import requirements_layer

    stock = fork_recipe(pinned.index.files_dir / STOCK, tmp_path / "stock", "1.0", {}, requires=("tomli-w",))
    fork = fork_recipe(
        stock, tmp_path / "fork", "1.0.post1", {}, requires=("tomli-w", "torch==2.6.0", 'x; python_version < "3"')
    )
    layer = requirements_layer(fork, tmp_path / "cache", None, stock)
    assert layer.venv is None and layer.installed == []
    assert layer.stock == ["tomli-w"] and layer.left_out == [
        "torch==2.6.0: built for CUDA torch (the runtime's CPU torch stands in)"
    ]
    assert layer.summary().endswith(f"1 more that {stock.name} declares too left to the runtime layer")
    # ...unless the fork's own changes import it (a fork importing triton, which stock declares): then it
    # is installed for real (tomli-w from PyPI), so the install check's `import vllm` can succeed
    layer = requirements_layer(fork, tmp_path / "cache", None, stock, imported=lambda module: module == "tomli_w")
    assert layer.stock == [] and layer.installed == ["tomli-w"] and layer.venv is not None
    assert layer.summary().startswith("the wheel's requirements tomli-w installed")


def test_build_warns_of_a_dist_name_the_series_contradicts_with_or_without_verify(forked, capsys, tmp_path):
    """`vpatch build` (not only `verify`) names the patch and line that look the package up as ai_dynamo_vllm;
    `--dist-name ai_dynamo_vllm` agrees with the code and is not warned about."""
    ws = forked
    patch = ws.series_dir("1.0") / "0002-v1-publish-kv-events.patch"
    line = next(n for n, t in enumerate(patch.read_text().splitlines(), 1) if "ai_dynamo_vllm" in t)
    said = f"{patch.name}:{line} (vllm/core/kv_events.py): the code looks itself up as 'ai_dynamo_vllm'"
    for extra in (("--no-install-check",), ("--no-verify",)):
        capsys.readouterr()
        out = tmp_path / extra[0].lstrip("-")
        assert ws.run("build", "1.0", "-o", str(out), "--no-runtime", "--json", *extra) == 0
        stdout, err = capsys.readouterr()
        (entry,) = json.loads(stdout)["wheels"]
        warnings = entry["verify"]["warnings"] if "verify" in entry else entry["warnings"]
        assert len(warnings) == 1 and warnings[0].startswith(said), (extra, warnings)
        assert "build with --dist-name ai_dynamo_vllm" in warnings[0]
        assert "warning: vllm-1.0" in err and said in err, err
    capsys.readouterr()
    out = tmp_path / "renamed"
    assert ws.run("build", "1.0", "-o", str(out), "--no-verify", "--dist-name", "ai_dynamo_vllm", "--json") == 0
    stdout, err = capsys.readouterr()
    (entry,) = json.loads(stdout)["wheels"]
    assert entry["warnings"] == [] and "looks itself up" not in err
